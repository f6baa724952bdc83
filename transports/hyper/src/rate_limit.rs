//! The per-connection token buckets of [`RateLimit`]: frames and bytes a connection may send.

use std::time::Instant;

use crate::config::RateLimit;

/// Whether a frame may be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within the limit.
    Admit,
    /// Over it: refuse the frame.
    Refuse,
    /// Over it, `max_refused` times in a row: close the connection.
    Close,
}

/// One connection's two buckets (refilled together) and its run of refusals. The limits
/// themselves stay in the server's configuration: every connection holds one of these, so it
/// is kept small.
#[derive(Debug)]
pub(crate) struct FrameLimiter {
    // Single precision: plenty for buckets, and every connection holds one.
    frames: f32,
    bytes: f32,
    last: Instant,
    refused_in_a_row: u32,
}

impl FrameLimiter {
    /// Full buckets at `now`.
    pub(crate) fn new(limit: &RateLimit, now: Instant) -> Self {
        FrameLimiter {
            frames: limit.frame_burst as f32,
            bytes: limit.byte_burst as f32,
            last: now,
            refused_in_a_row: 0,
        }
    }

    /// Counts a frame of `len` bytes arriving at `now`, under `limit` (the one the buckets
    /// were made with).
    pub(crate) fn check(&mut self, limit: &RateLimit, len: usize, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        let frames =
            (f64::from(self.frames) + elapsed * limit.frames_per_second).min(limit.frame_burst);
        let bytes =
            (f64::from(self.bytes) + elapsed * limit.bytes_per_second).min(limit.byte_burst);
        (self.frames, self.bytes) = (frames as f32, bytes as f32);
        // A frame larger than the byte burst costs the whole burst, so it fits a full bucket.
        let cost = (len as f64).min(limit.byte_burst);
        if frames >= 1.0 && bytes >= cost {
            self.frames = (frames - 1.0) as f32;
            self.bytes = (bytes - cost) as f32;
            self.refused_in_a_row = 0;
            return Verdict::Admit;
        }
        self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
        if self.refused_in_a_row > limit.max_refused {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limit(frames_per_second: f64, frame_burst: f64, max_refused: u32) -> RateLimit {
        RateLimit {
            frames_per_second,
            frame_burst,
            max_refused,
            ..RateLimit::default()
        }
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let start = Instant::now();
        let rate = limit(10.0, 5.0, 100);
        let mut limiter = FrameLimiter::new(&rate, start);
        for _ in 0..5 {
            assert_eq!(limiter.check(&rate, 10, start), Verdict::Admit);
        }
        assert_eq!(limiter.check(&rate, 10, start), Verdict::Refuse);
        // 10 frames a second: one more every 100 ms.
        let later = start + Duration::from_millis(100);
        assert_eq!(limiter.check(&rate, 10, later), Verdict::Admit);
        assert_eq!(limiter.check(&rate, 10, later), Verdict::Refuse);
        // The bucket never holds more than the burst.
        let much_later = start + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(limiter.check(&rate, 10, much_later), Verdict::Admit);
        }
        assert_eq!(limiter.check(&rate, 10, much_later), Verdict::Refuse);
    }

    #[test]
    fn bytes_are_limited_too_and_a_huge_frame_still_fits_a_full_bucket() {
        let start = Instant::now();
        let rate = RateLimit {
            bytes_per_second: 1_000.0,
            byte_burst: 1_000.0,
            ..RateLimit::default()
        };
        let mut limiter = FrameLimiter::new(&rate, start);
        assert_eq!(limiter.check(&rate, 600, start), Verdict::Admit);
        assert_eq!(limiter.check(&rate, 600, start), Verdict::Refuse);
        let later = start + Duration::from_secs(1);
        assert_eq!(limiter.check(&rate, 1_000_000, later), Verdict::Admit);
    }

    #[test]
    fn a_client_that_keeps_going_is_closed_and_one_that_slows_down_is_not() {
        let start = Instant::now();
        let rate = limit(1.0, 1.0, 3);
        let mut limiter = FrameLimiter::new(&rate, start);
        assert_eq!(limiter.check(&rate, 1, start), Verdict::Admit);
        for _ in 0..3 {
            assert_eq!(limiter.check(&rate, 1, start), Verdict::Refuse);
        }
        // It slowed down: an admitted frame starts the count again.
        let later = start + Duration::from_secs(1);
        assert_eq!(limiter.check(&rate, 1, later), Verdict::Admit);
        for _ in 0..3 {
            assert_eq!(limiter.check(&rate, 1, later), Verdict::Refuse);
        }
        assert_eq!(limiter.check(&rate, 1, later), Verdict::Close);
    }
}
