//! Catching up from the journal, and the decisions a crash cut short (see the module doc of
//! [`super`]).

use super::{Loaded, Partial, Shell};
use crate::journal::append::{JournalError, JournalRecord};
use crate::metrics::EntityKindLabel;
use crate::runtime::{EntityError, EntityKind, Runtime, SliceError};

impl<K: EntityKind> Shell<K> {
    /// Folds the journal events after the records' last one into them, and persists them.
    pub(super) async fn catch_up(
        &self,
        runtime: &Runtime,
        context: &K::Context,
        loaded: &mut Loaded<K>,
    ) -> Result<(), SliceError> {
        let id = self.id.as_ref();
        let records = runtime
            .journal
            .read_after(K::FAMILY, id, loaded.sequences.last_journal)
            .await
            .map_err(EntityError::from)?;
        if records.is_empty() {
            // Nothing after our last event: it expired with the journal's retention (our
            // records hold it, a snapshot covers it), so the next append expects what is left.
            let last = runtime
                .journal
                .last_sequence(K::FAMILY, id)
                .await
                .map_err(EntityError::from)?;
            if last < loaded.sequences.last_journal {
                tracing::info!(
                    kind = K::KIND,
                    id,
                    last,
                    "the entity's journal expired; appending after what remains"
                );
                loaded.sequences.last_journal = last;
            }
            return Ok(());
        }
        tracing::info!(
            kind = K::KIND,
            id,
            from = loaded.sequences.last_journal,
            events = records.len(),
            "catching up from the journal"
        );
        runtime
            .metrics
            .journal_catch_ups
            .get_or_create(&EntityKindLabel { kind: K::KIND })
            .inc();
        let mut applied = Vec::new();
        let mut decision: Vec<JournalRecord> = Vec::new();
        for record in records {
            if decision
                .first()
                .is_some_and(|first| first.inbox_seq != record.inbox_seq)
            {
                // A decision cut short and followed by others: it stands as it is.
                self.fold(context, loaded, std::mem::take(&mut decision), &mut applied)?;
            }
            if record.index as usize != decision.len() {
                return Err(EntityError::Journal(JournalError::Malformed {
                    subject: record.event_name.clone(),
                    sequence: record.sequence,
                    detail: format!(
                        "event {} of its decision follows {} of them",
                        record.index,
                        decision.len()
                    ),
                })
                .into());
            }
            let ends = record.ends_decision();
            decision.push(record);
            if ends {
                self.fold(context, loaded, std::mem::take(&mut decision), &mut applied)?;
            }
        }
        if !applied.is_empty() {
            // Persisted before a part cut short is noted: the stored position never points
            // into a decision that is not whole.
            K::persist(
                context,
                &self.id,
                &mut loaded.records,
                loaded.sequences,
                &applied,
            )?;
            K::project(context, &self.id, &loaded.records).await?;
        }
        if let Some(last) = decision.last() {
            let (inbox_seq, count, sequence) = (last.inbox_seq, last.count as usize, last.sequence);
            let events = self.decode_all(&decision)?;
            tracing::warn!(
                kind = K::KIND,
                id,
                inbox_seq,
                have = events.len(),
                of = count,
                "a decision was cut short by a crash; it completes when its command comes back"
            );
            // The next append goes after the part in the journal.
            loaded.sequences.last_journal = sequence;
            loaded.pending = Some(Partial {
                inbox_seq,
                count,
                events,
            });
        }
        Ok(())
    }

    /// Folds one decision read from the journal.
    fn fold(
        &self,
        context: &K::Context,
        loaded: &mut Loaded<K>,
        decision: Vec<JournalRecord>,
        applied: &mut Vec<(u64, Vec<K::Event>)>,
    ) -> Result<(), SliceError> {
        let Some(last) = decision.last() else {
            return Ok(());
        };
        let (inbox_seq, sequence) = (last.inbox_seq, last.sequence);
        let events = self.decode_all(&decision)?;
        for event in &events {
            K::prepare_event(context, &self.id, &mut loaded.records, event)?;
        }
        K::apply(&mut loaded.records, inbox_seq, &events, true);
        loaded.sequences.last_inbox = loaded.sequences.last_inbox.max(inbox_seq);
        loaded.sequences.last_journal = sequence;
        applied.push((inbox_seq, events));
        Ok(())
    }

    fn decode_all(&self, decision: &[JournalRecord]) -> Result<Vec<K::Event>, SliceError> {
        decision
            .iter()
            .map(|record| {
                K::decode(&self.id, record).map_err(|source| {
                    EntityError::Codec {
                        sequence: record.sequence,
                        source,
                    }
                    .into()
                })
            })
            .collect()
    }

    /// The part of a decision in the journal becomes the decision.
    pub(super) fn stand(
        &self,
        context: &K::Context,
        loaded: &mut Loaded<K>,
        partial: Partial<K::Event>,
        applied: &mut Vec<(u64, Vec<K::Event>)>,
    ) -> Result<(), EntityError> {
        tracing::error!(
            kind = K::KIND,
            id = %self.id,
            inbox_seq = partial.inbox_seq,
            have = partial.events.len(),
            of = partial.count,
            "a decision cut short cannot be completed; the part in the journal stands"
        );
        for event in &partial.events {
            K::prepare_event(context, &self.id, &mut loaded.records, event)?;
        }
        K::apply(
            &mut loaded.records,
            partial.inbox_seq,
            &partial.events,
            false,
        );
        loaded.sequences.last_inbox = loaded.sequences.last_inbox.max(partial.inbox_seq);
        applied.push((partial.inbox_seq, partial.events));
        Ok(())
    }

    /// The events to fold for a command whose decision is partly in the journal, and the index
    /// of the first one still to append.
    pub(super) fn reconcile(
        &self,
        events: Vec<K::Event>,
        partial: Partial<K::Event>,
    ) -> (Vec<K::Event>, usize) {
        let have = partial.events.len();
        if events.len() == partial.count && events.starts_with(&partial.events) {
            tracing::info!(kind = K::KIND, id = %self.id, inbox_seq = partial.inbox_seq, have, of = partial.count, "completing a decision cut short");
            (events, have)
        } else {
            tracing::error!(
                kind = K::KIND,
                id = %self.id,
                inbox_seq = partial.inbox_seq,
                "deciding again gave another decision (an input changed since); the part in the journal stands"
            );
            (partial.events, have)
        }
    }
}
