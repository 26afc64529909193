//! Connection caps: at most so many connections per client IP and in total on one listener.
//! A connection over a cap is closed at once (before any byte is read); refusals are counted
//! and logged at most once per IP per minute, so an attack cannot flood the log either.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How many connections a listener takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections in total.
    pub total: usize,
    /// Open connections from one IP address.
    pub per_ip: usize,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// Its address holds `per_ip` connections already.
    PerIp,
    /// The listener holds `total` connections already.
    Total,
}

/// Counters of one gate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Connections open now.
    pub open: usize,
    /// Connections taken since start.
    pub accepted: u64,
    /// Refused because one IP held too many.
    pub refused_per_ip: u64,
    /// Refused because the listener was full.
    pub refused_total: u64,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
    /// When a refusal of each IP was last logged.
    logged: HashMap<IpAddr, Instant>,
}

/// The caps of one listener. Cheap to share.
#[derive(Debug)]
pub struct Gate {
    name: &'static str,
    limits: Limits,
    open: Mutex<Open>,
    accepted: AtomicU64,
    refused_per_ip: AtomicU64,
    refused_total: AtomicU64,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut o = self.gate.lock();
        o.total = o.total.saturating_sub(1);
        if let Some(n) = o.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                o.by_ip.remove(&self.ip);
            }
        }
    }
}

const LOG_EVERY: Duration = Duration::from_secs(60);
/// Past this many remembered IPs, old log times are forgotten (bounds the map).
const MAX_LOGGED: usize = 4096;

impl Gate {
    /// A gate called `name` (for logs and metrics).
    pub fn new(name: &'static str, limits: Limits) -> Arc<Gate> {
        Arc::new(Gate {
            name,
            limits,
            open: Mutex::new(Open::default()),
            accepted: AtomicU64::new(0),
            refused_per_ip: AtomicU64::new(0),
            refused_total: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The caps.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Takes a place for a connection from `ip`, or says why not.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let mut o = self.lock();
        let refusal = if o.total >= self.limits.total {
            Some(Refusal::Total)
        } else if o.by_ip.get(&ip).copied().unwrap_or(0) >= self.limits.per_ip {
            Some(Refusal::PerIp)
        } else {
            None
        };
        if let Some(r) = refusal {
            match r {
                Refusal::Total => self.refused_total.fetch_add(1, Ordering::Relaxed),
                Refusal::PerIp => self.refused_per_ip.fetch_add(1, Ordering::Relaxed),
            };
            let now = Instant::now();
            let due = o
                .logged
                .get(&ip)
                .is_none_or(|t| now.duration_since(*t) >= LOG_EVERY);
            if due {
                if o.logged.len() >= MAX_LOGGED {
                    o.logged.retain(|_, t| now.duration_since(*t) < LOG_EVERY);
                }
                if o.logged.len() < MAX_LOGGED {
                    o.logged.insert(ip, now);
                }
                let (limit, what) = match r {
                    Refusal::Total => (self.limits.total, "connections in total"),
                    _ => (self.limits.per_ip, "connections from this address"),
                };
                tracing::warn!(
                    listener = self.name,
                    %ip,
                    "refusing connections: {limit} {what} are open (logged once a minute per address)"
                );
            }
            return Err(r);
        }
        o.total += 1;
        *o.by_ip.entry(ip).or_insert(0) += 1;
        self.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            gate: self.clone(),
            ip,
        })
    }

    /// The counters.
    pub fn stats(&self) -> GateStats {
        GateStats {
            open: self.lock().total,
            accepted: self.accepted.load(Ordering::Relaxed),
            refused_per_ip: self.refused_per_ip.load(Ordering::Relaxed),
            refused_total: self.refused_total.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn caps_per_ip_and_in_total_and_places_come_back() {
        let g = Gate::new(
            "t",
            Limits {
                total: 3,
                per_ip: 2,
            },
        );
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let a1 = g.admit(a).unwrap();
        let _a2 = g.admit(a).unwrap();
        assert_eq!(g.admit(a).unwrap_err(), Refusal::PerIp);
        let _b1 = g.admit(b).unwrap();
        assert_eq!(g.admit(c).unwrap_err(), Refusal::Total);
        drop(a1);
        let _c1 = g.admit(c).unwrap();
        let s = g.stats();
        assert_eq!(s.open, 3);
        assert_eq!(s.accepted, 4);
        assert_eq!((s.refused_per_ip, s.refused_total), (1, 1));
    }
}
