//! The file descriptor budget. A service started with a default limit (1024 under systemd)
//! would run out of descriptors long before memory; the soft limit is raised to the hard
//! one at start, and connection caps are fitted into what is left after a reserve for the
//! index and the store, so a flood of connections can never starve a commit.

/// The soft and hard `RLIMIT_NOFILE` before and after raising the soft one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit found at start.
    pub was: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises the soft limit to the hard one (where the platform has one) and logs both.
pub fn raise() -> FdLimit {
    let (was, hard) = rlimit::Resource::NOFILE.get().unwrap_or((1024, 1024));
    let soft = match rlimit::increase_nofile_limit(hard) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("cannot raise the open file limit from {was}: {e}");
            was
        }
    };
    tracing::info!(was, soft, hard, "open file limit (RLIMIT_NOFILE)");
    FdLimit { was, soft, hard }
}

/// Fits wanted connection caps into `soft - reserve` descriptors, scaling them down in
/// proportion when they do not fit (each cap stays at least 8). Returns the caps to use.
pub fn fit(soft: u64, reserve: u64, wanted: &[usize]) -> Vec<usize> {
    let budget = soft.saturating_sub(reserve).max(16) as f64;
    let sum: f64 = wanted.iter().map(|w| *w as f64).sum();
    if sum <= budget {
        return wanted.to_vec();
    }
    wanted
        .iter()
        .map(|w| ((*w as f64) * budget / sum).floor().max(8.0) as usize)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_the_budget() {
        assert_eq!(fit(1 << 20, 256, &[4096, 2048]), vec![4096, 2048]);
        let got = fit(1024, 256, &[4096, 2048]);
        assert!(got.iter().sum::<usize>() <= 768, "{got:?}");
        assert_eq!(got, vec![512, 256]);
        assert_eq!(fit(100, 256, &[4096]), vec![16]);
    }
}
