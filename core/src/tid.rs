//! Time-sortable ids (the TID form of AT Protocol) and the clock they are made from.

const B32: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

/// A time-sortable id: 11 base32-sortable characters of microseconds since the epoch and 2 of
/// a clock id (its low 10 bits), so that keys sort by creation time.
pub fn tid(micros: u64, clock: u32) -> String {
    let mut out = [0u8; 13];
    let mut n = micros;
    for k in (0..11).rev() {
        out[k] = B32[(n & 31) as usize];
        n >>= 5;
    }
    out[11] = B32[((clock >> 5) & 31) as usize];
    out[12] = B32[(clock & 31) as usize];
    out.iter().map(|&b| b as char).collect()
}

/// Now, in microseconds since the epoch (0 if the clock is before it).
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tids_sort_by_time() {
        assert_eq!(tid(0, 0), "2222222222222");
        let a = tid(1_700_000_000_000_000, 5);
        let b = tid(1_700_000_000_000_001, 0);
        assert_eq!(a.len(), 13);
        assert!(a < b);
    }
}
