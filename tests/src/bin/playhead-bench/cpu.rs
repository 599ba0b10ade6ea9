//! Where the CPU goes during a phase: the benchmark process (the in-process node, gateway and
//! client) against the nats-server child, from their `/proc/{pid}/stat` times. Linux only;
//! elsewhere the figures read as unavailable.

use std::time::{Duration, Instant};

/// `USER_HZ`: the unit of the times in `/proc/{pid}/stat` (100 on every Linux target).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far by this process and by the broker, and when they were read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    at: Instant,
    bench: Option<f64>,
    broker: Option<f64>,
}

impl CpuSample {
    pub(crate) fn now(broker_pid: Option<u32>) -> Self {
        Self {
            at: Instant::now(),
            bench: cpu_seconds("self"),
            broker: broker_pid.and_then(|pid| cpu_seconds(&pid.to_string())),
        }
    }

    /// `benchmark process x.x s (y % of one core), nats-server …` since `earlier`.
    pub(crate) fn describe_since(&self, earlier: &CpuSample) -> String {
        let wall = self
            .at
            .duration_since(earlier.at)
            .max(Duration::from_millis(1));
        let share = |now: Option<f64>, then: Option<f64>| match (now, then) {
            (Some(now), Some(then)) => format!(
                "{:.1} s ({:.0}% of one core)",
                now - then,
                (now - then) / wall.as_secs_f64() * 100.0
            ),
            _ => "unavailable".to_owned(),
        };
        format!(
            "benchmark process (node, gateway, client) {}, nats-server {}, over {:.1} s",
            share(self.bench, earlier.bench),
            share(self.broker, earlier.broker),
            wall.as_secs_f64()
        )
    }
}

/// utime + stime of `/proc/{pid}/stat`, in seconds.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / TICKS_PER_SECOND)
}
