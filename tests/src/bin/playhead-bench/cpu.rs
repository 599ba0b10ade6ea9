//! Where the CPU goes during a phase: the benchmark process (the in-process node, gateway and
//! client) against the nats-server child, from their `/proc/{pid}/stat` times. Linux only;
//! elsewhere the figures read as unavailable.

use std::time::{Duration, Instant};

/// `USER_HZ`: the unit of the times in `/proc/{pid}/stat` (100 on every Linux target).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds spent between two samples by this process and by the broker (`None`: not
/// readable here).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CpuSpent {
    pub(crate) bench: Option<f64>,
    pub(crate) broker: Option<f64>,
}

impl CpuSpent {
    /// CPU seconds both spent during `wall`, per second: the cores they kept busy.
    pub(crate) fn cores_busy(&self, wall: Duration) -> Option<f64> {
        Some((self.bench? + self.broker?) / wall.as_secs_f64().max(1e-3))
    }
}

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

    /// This process's and the broker's CPU since `earlier`.
    pub(crate) fn spent_since(&self, earlier: &CpuSample) -> CpuSpent {
        let spent = |now: Option<f64>, then: Option<f64>| Some(now? - then?);
        CpuSpent {
            bench: spent(self.bench, earlier.bench),
            broker: spent(self.broker, earlier.broker),
        }
    }

    /// `benchmark process x.x s (y % of one core), nats-server …` since `earlier`.
    pub(crate) fn describe_since(&self, earlier: &CpuSample) -> String {
        let wall = self
            .at
            .duration_since(earlier.at)
            .max(Duration::from_millis(1));
        let share = |spent: Option<f64>| match spent {
            Some(spent) => format!(
                "{spent:.1} s ({:.0}% of one core)",
                spent / wall.as_secs_f64() * 100.0
            ),
            None => "unavailable".to_owned(),
        };
        let spent = self.spent_since(earlier);
        format!(
            "benchmark process (node, gateway, client) {}, nats-server {}, over {:.1} s",
            share(spent.bench),
            share(spent.broker),
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
