//! Token-bucket arithmetic as a generic cell rate algorithm: the whole state of a bucket is one
//! time, the "theoretical arrival time" (TAT) after which the bucket is full again. A request of
//! cost `c` pushes it `c` emission intervals later; it is admitted while the TAT stays within
//! `burst` intervals of now. Refill is lazy (computed from the time, no tick), exact in integer
//! nanoseconds, and never early: the interval is rounded up, and a clock that goes backwards only
//! makes the bucket look emptier.

/// `rate` tokens per `per`, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Nanoseconds per token (rounded up, at least 1).
    interval_ns: i128,
    burst: u64,
}

/// A whole period, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
    Hour,
    Day,
}

impl Per {
    pub fn seconds(self) -> u64 {
        match self {
            Self::Second => 1,
            Self::Minute => 60,
            Self::Hour => 3600,
            Self::Day => 86_400,
        }
    }
}

const NS: i128 = 1_000_000_000;

/// What one take decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Admitted {
        /// The state to store.
        tat_ns: i64,
        /// Whole tokens left after this request.
        remaining: u64,
        /// Until the bucket is full again.
        full_in_ns: i64,
    },
    Refused {
        /// Until the request's cost is available (the whole window when it never will be).
        retry_in_ns: i64,
        remaining: u64,
        full_in_ns: i64,
    },
}

fn clamp(v: i128) -> i64 {
    i64::try_from(v.clamp(i128::from(i64::MIN), i128::from(i64::MAX))).unwrap_or(i64::MAX)
}

impl Limit {
    pub fn new(rate: u64, per: Per, burst: u64) -> Self {
        let period_ns = i128::from(per.seconds()) * NS;
        let rate = i128::from(rate.max(1));
        Self {
            interval_ns: ((period_ns + rate - 1) / rate).max(1),
            burst: burst.max(1),
        }
    }

    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Seconds to refill the whole burst, rounded up.
    pub fn window_seconds(&self) -> u64 {
        let ns = self.interval_ns * i128::from(self.burst);
        u64::try_from((ns + NS - 1) / NS).unwrap_or(u64::MAX)
    }

    fn tolerance_ns(&self) -> i128 {
        self.interval_ns * i128::from(self.burst)
    }

    fn tokens_in(&self, room_ns: i128) -> u64 {
        u64::try_from((room_ns.max(0)) / self.interval_ns).unwrap_or(u64::MAX)
    }

    /// Takes `cost` tokens at `now_ns` from a bucket whose state is `tat_ns` (0: never used).
    pub fn take(&self, tat_ns: i64, now_ns: i64, cost: u64) -> Verdict {
        let (tat, now) = (i128::from(tat_ns), i128::from(now_ns));
        let base = tat.max(now);
        let after = base + self.interval_ns * i128::from(cost);
        let tolerance = self.tolerance_ns();
        if after - now <= tolerance {
            Verdict::Admitted {
                tat_ns: clamp(after),
                remaining: self.tokens_in(tolerance - (after - now)),
                full_in_ns: clamp(after - now),
            }
        } else {
            let wait = if cost > self.burst {
                tolerance
            } else {
                after - now - tolerance
            };
            Verdict::Refused {
                retry_in_ns: clamp(wait),
                remaining: self.tokens_in(tolerance - (base - now)),
                full_in_ns: clamp(base - now),
            }
        }
    }
}

/// Whole seconds for a header: rounded up, at least `min`.
pub fn ceil_seconds(ns: i64, min: u64) -> u64 {
    let secs = (i128::from(ns.max(0)) + NS - 1) / NS;
    u64::try_from(secs).unwrap_or(u64::MAX).max(min)
}

/// The stored form of a bucket: a format byte and the TAT.
pub fn encode(tat_ns: i64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = 1;
    out[1..].copy_from_slice(&tat_ns.to_le_bytes());
    out
}

/// An empty value reads as a new (full) bucket. Only this code writes these keys, in this
/// format; a later format gets a new key layout version, so nothing else is ever read here.
pub fn decode(bytes: &[u8]) -> i64 {
    match bytes.split_first() {
        Some((1, rest)) => rest.try_into().map(i64::from_le_bytes).unwrap_or_default(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const NOW: i64 = 1_800_000_000 * 1_000_000_000;
    const SEC: i64 = 1_000_000_000;

    fn admitted(v: Verdict) -> (i64, u64) {
        match v {
            Verdict::Admitted {
                tat_ns, remaining, ..
            } => (tat_ns, remaining),
            Verdict::Refused { .. } => panic!("refused: {v:?}"),
        }
    }

    /// Takes one token `n` times at `now`; returns how many were admitted and the state.
    fn drain(limit: &Limit, mut tat: i64, now: i64, n: u64) -> (u64, i64) {
        let mut ok = 0;
        for _ in 0..n {
            if let Verdict::Admitted { tat_ns, .. } = limit.take(tat, now, 1) {
                tat = tat_ns;
                ok += 1;
            }
        }
        (ok, tat)
    }

    #[test]
    fn a_new_bucket_admits_exactly_its_burst() {
        let limit = Limit::new(10, Per::Second, 20);
        let (ok, tat) = drain(&limit, 0, NOW, 50);
        assert_eq!(ok, 20);
        match limit.take(tat, NOW, 1) {
            Verdict::Refused {
                retry_in_ns,
                remaining,
                full_in_ns,
            } => {
                assert_eq!(retry_in_ns, SEC / 10, "one token comes back after 100 ms");
                assert_eq!(remaining, 0);
                assert_eq!(full_in_ns, 2 * SEC);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn refill_is_lazy_exact_and_never_early() {
        let limit = Limit::new(10, Per::Second, 20);
        let (_, tat) = drain(&limit, 0, NOW, 20);
        // 299 ms later: two tokens, not three.
        let (ok, _) = drain(&limit, tat, NOW + 299_000_000, 5);
        assert_eq!(ok, 2);
        let (ok, _) = drain(&limit, tat, NOW + 300_000_000, 5);
        assert_eq!(ok, 3);
        // Never more than the burst, however long the wait.
        let (ok, _) = drain(&limit, tat, NOW + 3600 * SEC, 100);
        assert_eq!(ok, 20);
    }

    #[test]
    fn remaining_counts_down_with_the_requests() {
        let limit = Limit::new(600, Per::Minute, 100);
        let (tat, remaining) = admitted(limit.take(0, NOW, 1));
        assert_eq!(remaining, 99);
        let (_, remaining) = admitted(limit.take(tat, NOW, 9));
        assert_eq!(remaining, 90);
        assert_eq!(limit.window_seconds(), 10);
    }

    #[test]
    fn a_cost_takes_that_many_tokens() {
        let limit = Limit::new(1, Per::Hour, 20);
        let mut tat = 0;
        let mut ok = 0;
        for _ in 0..10 {
            if let Verdict::Admitted { tat_ns, .. } = limit.take(tat, NOW, 5) {
                tat = tat_ns;
                ok += 1;
            }
        }
        assert_eq!(ok, 4);
    }

    #[test]
    fn a_cost_above_the_burst_is_always_refused_with_a_whole_window_to_wait() {
        let limit = Limit::new(10, Per::Second, 5);
        for tat in [0, NOW - 100 * SEC, NOW + SEC] {
            match limit.take(tat, NOW, 6) {
                Verdict::Refused { retry_in_ns, .. } => assert_eq!(retry_in_ns, SEC / 2),
                v => panic!("{v:?}"),
            }
        }
    }

    #[test]
    fn a_clock_going_backwards_never_refills() {
        let limit = Limit::new(10, Per::Second, 2);
        let (_, tat) = drain(&limit, 0, NOW, 2);
        let (ok, _) = drain(&limit, tat, NOW - 60 * SEC, 5);
        assert_eq!(ok, 0);
    }

    #[test]
    fn very_large_rates_and_bursts_do_not_overflow() {
        let limit = Limit::new(u64::MAX, Per::Second, u64::MAX);
        let (tat, remaining) = admitted(limit.take(0, NOW, u64::MAX / 2));
        assert!(tat > NOW && remaining > 0);
        let slow = Limit::new(1, Per::Day, u64::MAX);
        let (tat, _) = admitted(slow.take(i64::MAX - 5, i64::MAX - 10, 1));
        assert_eq!(tat, i64::MAX);
        assert!(slow.window_seconds() > 0);
        let strict = Limit::new(1, Per::Day, 1);
        assert!(matches!(
            strict.take(i64::MAX, i64::MIN, 1),
            Verdict::Refused { .. }
        ));
    }

    #[test]
    fn an_odd_rate_rounds_the_interval_up() {
        // 7 per second: 142857142.857 ns per token → 142857143: never refills early.
        let limit = Limit::new(7, Per::Second, 1);
        let (tat, _) = admitted(limit.take(0, NOW, 1));
        assert!(matches!(
            limit.take(tat, NOW + 142_857_142, 1),
            Verdict::Refused { .. }
        ));
        assert!(matches!(
            limit.take(tat, NOW + 142_857_143, 1),
            Verdict::Admitted { .. }
        ));
    }

    #[test]
    fn encoding_round_trips_and_garbage_is_a_new_bucket() {
        for tat in [0, 1, NOW, i64::MAX, -5] {
            assert_eq!(decode(&encode(tat)), tat);
        }
        assert_eq!(decode(b""), 0);
        assert_eq!(decode(b"\x02abcdefgh"), 0);
        assert_eq!(decode(b"\x01abc"), 0);
    }

    #[test]
    fn header_seconds_round_up_with_a_floor() {
        assert_eq!(ceil_seconds(1, 1), 1);
        assert_eq!(ceil_seconds(0, 1), 1);
        assert_eq!(ceil_seconds(0, 0), 0);
        assert_eq!(ceil_seconds(SEC + 1, 1), 2);
        assert_eq!(ceil_seconds(-SEC, 0), 0);
    }
}
