//! When to fetch a provider's remote JWKS: at start, every `refresh_interval`, sooner after a
//! failure, and on an unknown `kid` — never more often than `min_refetch_interval`, so tokens
//! with made-up key ids cannot turn the filter into a load generator against the IdP.

use super::config::RemoteJwks;

#[derive(Debug, Clone, Default)]
pub struct FetchSchedule {
    /// When the next fetch is due; `None` = at once (never fetched).
    next_at: Option<i64>,
    /// Start of the fetch the host is running now, if any.
    in_flight_since: Option<i64>,
    /// Start of the last fetch (for the refetch rate limit).
    last_started: Option<i64>,
}

impl FetchSchedule {
    /// Whether a fetch should start now. A fetch whose answer never came (lost callback) stops
    /// blocking after twice its timeout.
    pub fn due(&self, r: &RemoteJwks, now: i64) -> bool {
        if let Some(since) = self.in_flight_since {
            let give_up =
                i64::try_from(r.timeout_ms.saturating_mul(2) / 1000 + 1).unwrap_or(i64::MAX);
            if now < since.saturating_add(give_up) {
                return false;
            }
        }
        self.next_at.map_or(true, |at| now >= at)
    }

    pub fn started(&mut self, now: i64) {
        self.in_flight_since = Some(now);
        self.last_started = Some(now);
    }

    pub fn succeeded(&mut self, r: &RemoteJwks, now: i64) {
        self.in_flight_since = None;
        self.next_at = Some(now.saturating_add(r.refresh_interval));
    }

    /// After a failure, retry sooner than the refresh interval but no sooner than the refetch
    /// interval.
    pub fn failed(&mut self, r: &RemoteJwks, now: i64) {
        self.in_flight_since = None;
        self.next_at = Some(now.saturating_add(r.min_refetch_interval.min(r.refresh_interval)));
    }

    /// A token named a `kid` we do not know: bring the next fetch forward if the rate limit
    /// allows. Returns whether it did.
    pub fn request_refetch(&mut self, r: &RemoteJwks, now: i64) -> bool {
        let allowed = self
            .last_started
            .map_or(true, |t| now >= t.saturating_add(r.min_refetch_interval));
        if allowed && self.in_flight_since.is_none() {
            self.next_at = Some(self.next_at.map_or(now, |at| at.min(now)));
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn remote() -> RemoteJwks {
        RemoteJwks {
            cluster: "idp".to_owned(),
            path: "/jwks".to_owned(),
            authority: "idp".to_owned(),
            refresh_interval: 300,
            timeout_ms: 2000,
            min_refetch_interval: 30,
        }
    }

    #[test]
    fn first_fetch_is_immediate_then_periodic() {
        let r = remote();
        let mut s = FetchSchedule::default();
        assert!(s.due(&r, 1000));
        s.started(1000);
        assert!(!s.due(&r, 1001), "in flight");
        s.succeeded(&r, 1001);
        assert!(!s.due(&r, 1300));
        assert!(s.due(&r, 1301));
    }

    #[test]
    fn failures_retry_after_the_refetch_interval() {
        let r = remote();
        let mut s = FetchSchedule::default();
        s.started(0);
        s.failed(&r, 2);
        assert!(!s.due(&r, 31));
        assert!(s.due(&r, 32));
    }

    #[test]
    fn lost_callback_stops_blocking_after_twice_the_timeout() {
        let r = remote();
        let mut s = FetchSchedule::default();
        s.started(0);
        assert!(!s.due(&r, 4));
        assert!(s.due(&r, 5));
    }

    #[test]
    fn unknown_kid_refetch_is_rate_limited() {
        let r = remote();
        let mut s = FetchSchedule::default();
        s.started(0);
        s.succeeded(&r, 0);
        assert!(
            !s.request_refetch(&r, 10),
            "within min_refetch_interval of the last fetch"
        );
        assert!(!s.due(&r, 10));
        assert!(s.request_refetch(&r, 30));
        assert!(s.due(&r, 30));
        s.started(30);
        assert!(!s.request_refetch(&r, 31), "in flight");
        s.succeeded(&r, 31);
        assert!(!s.request_refetch(&r, 59));
        assert!(s.request_refetch(&r, 60));
    }
}
