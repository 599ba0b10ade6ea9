//! The in-process node's own account of a rebuild: the few info-level records naming what it
//! restored and replayed, kept from its tracing events while the benchmark's log on stderr stays
//! at `warn`. Only the modules that log a rebuild are listened to (none of them logs per
//! message), so the other phases pay nothing for it.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::Context;

/// The modules whose records are kept, and the messages kept from them.
const TARGETS: [&str; 3] = [
    "playhead_actors::node",
    "playhead_actors::journal::snapshot",
    "playhead_actors::runtime::rebuild",
];
const MESSAGES: [&str; 3] = [
    "snapshot restored",
    "journal replayed",
    "the local store is rebuilt",
];

static RECORDS: Mutex<Vec<Record>> = Mutex::new(Vec::new());

/// One kept record: where it was logged, its message and its fields as text.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) target: String,
    pub(crate) message: String,
    fields: HashMap<String, String>,
}

impl Record {
    /// A numeric field (0 when absent or not a number).
    pub(crate) fn number(&self, name: &str) -> f64 {
        self.fields
            .get(name)
            .and_then(|value| value.parse().ok())
            .unwrap_or(0.0)
    }

    pub(crate) fn text(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

/// The layer that keeps the records; install it next to the stderr log.
pub(crate) fn layer<S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>>()
-> impl Layer<S> {
    let targets = TARGETS.iter().fold(Targets::new(), |targets, target| {
        targets.with_target(*target, Level::INFO)
    });
    Keep.with_filter(targets)
}

/// The records kept since the last call, oldest first.
pub(crate) fn take() -> Vec<Record> {
    std::mem::take(
        &mut *RECORDS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()),
    )
}

struct Keep;

impl<S: Subscriber> Layer<S> for Keep {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let Some(message) = fields.0.remove("message") else {
            return;
        };
        if !MESSAGES.contains(&message.as_str()) {
            return;
        }
        let record = Record {
            target: event.metadata().target().to_owned(),
            message,
            fields: fields.0,
        };
        RECORDS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(record);
    }
}

#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}
