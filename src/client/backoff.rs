//! `Backoff`: capped exponential back-off with jitter between retries.
//!
//! Delays double from `min` to `max`; each actual delay is drawn uniformly
//! from the upper half of the current step ("equal jitter"), so clients that
//! lost the same node do not retry in lock step, and a delay is never shorter
//! than half the step.

use std::time::Duration;

use rand::Rng as _;

/// The delays between retries of one call.
#[derive(Debug, Clone)]
pub struct Backoff {
    step: Duration,
    max: Duration,
}

impl Backoff {
    /// Delays starting at `min`, doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            step: min,
            max: max.max(min),
        }
    }

    /// The next delay: in `[step/2, step]`, then the step doubles (capped).
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (self.step * 2).min(self.max);
        let half = step / 2;
        let jitter_us = rand::thread_rng().gen_range(0..=(step - half).as_micros() as u64);
        half + Duration::from_micros(jitter_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Back-off grows from min, never exceeds max, and never drops below half a step.
    #[test]
    fn delays_double_and_are_capped() {
        let mut backoff = Backoff::new(Duration::from_millis(25), Duration::from_secs(1));
        let mut step = Duration::from_millis(25);
        for _ in 0..20 {
            let delay = backoff.next_delay();
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} outside [{:?}, {step:?}]",
                step / 2
            );
            step = (step * 2).min(Duration::from_secs(1));
        }
    }
}
