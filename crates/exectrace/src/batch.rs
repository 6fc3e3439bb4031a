//! Events held for the recorder and handed over in batches, for both tracers.
//!
//! Why it exists: handing each event to the spool on its own wakes the spool's writer once per
//! event; an exec storm makes tens of thousands of them. Both tracers hold events here and hand
//! them over together.
//!
//! What it guarantees: an event is held at most [`BATCH_DELAY`] after the first of its batch
//! (the tracer's loop waits at most [`Batch::wait`]), a batch holds at most [`BATCH`] events
//! before it is due, and every event the recorder drops is counted in [`Batch::lost`].

use std::time::{Duration, Instant};

use events::{Event, Recorded, Recorder};

/// The most events held before they are handed to the recorder.
pub(crate) const BATCH: usize = 64;
/// The longest an event is held before it is handed to the recorder.
pub(crate) const BATCH_DELAY: Duration = Duration::from_millis(10);

pub(crate) struct Batch {
    recorder: Recorder,
    events: Vec<Event>,
    /// When the first held event was held.
    since: Option<Instant>,
    /// Events the recorder dropped (its queue was full).
    pub(crate) lost: u64,
}

impl Batch {
    pub(crate) fn new(recorder: Recorder) -> Batch {
        Batch {
            recorder,
            events: Vec::with_capacity(BATCH),
            since: None,
            lost: 0,
        }
    }

    /// The sensor name events are recorded under.
    pub(crate) fn sensor(&self) -> &str {
        self.recorder.sensor()
    }

    /// Holds `event` for the next batch.
    pub(crate) fn push(&mut self, event: Event) {
        if self.events.is_empty() {
            self.since = Some(Instant::now());
        }
        self.events.push(event);
    }

    pub(crate) fn is_full(&self) -> bool {
        self.events.len() >= BATCH
    }

    /// Whether the held events should be handed over now.
    pub(crate) fn is_due(&self) -> bool {
        self.is_full()
            || self
                .since
                .is_some_and(|since| since.elapsed() >= BATCH_DELAY)
    }

    /// How long until the held events are due; `None` when nothing is held.
    pub(crate) fn wait(&self) -> Option<Duration> {
        self.since
            .map(|since| BATCH_DELAY.saturating_sub(since.elapsed()))
    }

    /// Hands the held events to the recorder.
    pub(crate) fn flush(&mut self) {
        for event in self.events.drain(..) {
            if self.recorder.record(event) == Recorded::Dropped {
                self.lost += 1;
            }
        }
        self.since = None;
    }
}
