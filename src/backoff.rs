//! Retry delays, in one place: every loop that retries (the broker, a Modbus gateway, the store,
//! the spool, dead-letter writes, webhooks and robots) waits by a [`Backoff`].
//!
//! Exponential: the first delay is `min`, each failure doubles it up to `max`, a success starts
//! again at `min`. With jitter ("equal jitter": a delay is drawn in [½d, d)), many retriers that
//! failed together do not come back in step.

use std::time::Duration;

/// Doubling delays from `min` up to `max`, with optional jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
    jitter: bool,
}

impl Backoff {
    /// Delays `min`, 2·`min`, 4·`min`, … capped at `max` (a `max` below `min` is `min`).
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max: max.max(min),
            current: min,
            jitter: false,
        }
    }

    /// Draw each delay in [½d, d) instead of waiting exactly d.
    pub fn with_jitter(mut self) -> Backoff {
        self.jitter = true;
        self
    }

    /// The delay to wait before the next attempt; the one after it is doubled (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        if self.jitter {
            d.mul_f64(0.5 + rand::random::<f64>() * 0.5)
        } else {
            d
        }
    }

    /// The delay `next_delay` would give now, before jitter (for log lines).
    pub fn peek(&self) -> Duration {
        self.current
    }

    /// After a success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.current = self.min;
    }

    /// The cap.
    pub fn max(&self) -> Duration {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_start_again_after_a_success() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1000));
        let seq: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        assert_eq!(
            seq,
            vec![ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        b.reset();
        assert_eq!(b.next_delay(), ms(100));
        assert_eq!(
            Backoff::new(ms(500), ms(10)).next_delay(),
            ms(500),
            "cap below min"
        );
        let mut j = Backoff::new(ms(1000), ms(1000)).with_jitter();
        for _ in 0..100 {
            let d = j.next_delay();
            assert!(d >= ms(500) && d < ms(1000), "{d:?}");
        }
    }
}
