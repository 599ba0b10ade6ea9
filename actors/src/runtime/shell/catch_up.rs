//! Catching up from the journal, and the decisions a crash cut short (see the module doc of
//! [`super`]).

use super::{Loaded, Partial, REPLAYED_KEPT, Replayed, Shell};
use crate::domain::time::Timestamp;
use crate::journal::append::{JournalError, JournalRecord};
use crate::metrics::EntityKindLabel;
use crate::runtime::{Decided, EntityError, EntityKind, Runtime, SliceError};

/// A command a catch-up answers: stored in the inbox, awaited by its publisher, with no answer
/// filed.
struct Awaiting<K: EntityKind> {
    seq: u64,
    command: K::Command,
    now: Timestamp,
}

/// The commands a catch-up answers, oldest first, and the answers it has so far.
struct Answering<K: EntityKind> {
    awaiting: std::collections::VecDeque<Awaiting<K>>,
    answers: Vec<(u64, Vec<u8>)>,
}

impl<K: EntityKind> Shell<K> {
    /// Folds the journal events after the records' last one into them, and persists them.
    /// `redelivered_from`: the lowest inbox sequence that may still come back (the first of
    /// the slice at hand; everything before it was acknowledged): from there on, every command
    /// the folded decisions cover gets its answer filed before the records.
    pub(super) async fn catch_up(
        &self,
        runtime: &Runtime,
        context: &K::Context,
        loaded: &mut Loaded<K>,
        redelivered_from: u64,
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
        // Everything these decisions touch is loaded first, so the records kept before each
        // decision (for the answers of commands coming back) hold it as it was then.
        for event in self.decode_all(&records)? {
            K::prepare_event(context, &self.id, &mut loaded.records, &event)?;
        }
        let last_covered = records.last().map_or(0, |record| record.inbox_seq);
        let mut answering = self
            .awaiting_answers(
                runtime,
                (loaded.sequences.last_inbox + 1).max(redelivered_from),
                last_covered,
            )
            .await?;
        loaded.replayed = vec![Replayed {
            inbox_seq: loaded.sequences.last_inbox,
            events: Vec::new(),
            records: loaded.records.clone(),
        }];
        let (decisions, cut_short) = decisions(records)?;
        let mut applied = Vec::new();
        for decision in decisions {
            self.fold(context, loaded, decision, &mut applied, &mut answering)?;
        }
        if !applied.is_empty() {
            // The answers of the commands these decisions cover, filed before the records: a
            // command coming back after another crash still gets its first answer, though the
            // records stored next are past it.
            runtime
                .storage
                .answers
                .file(K::FAMILY.token(), id, answering.answers)
                .map_err(EntityError::from)?;
            // Persisted before a part cut short is noted: the stored position never points
            // into a decision that is not whole.
            super::persist::<K>(runtime, context, &self.id, loaded, &applied)?;
            K::project(context, &self.id, &loaded.records).await?;
        }
        if let Some(last) = cut_short.last() {
            let (inbox_seq, count, sequence) = (last.inbox_seq, last.count as usize, last.sequence);
            let events = self.decode_all(&cut_short)?;
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

    /// The commands stored in the inbox with a sequence in `from..=to` whose publisher awaits
    /// an answer that is not filed yet: the ones a catch-up answers as it folds.
    async fn awaiting_answers(
        &self,
        runtime: &Runtime,
        from: u64,
        to: u64,
    ) -> Result<Answering<K>, SliceError> {
        let mut answering = Answering {
            awaiting: std::collections::VecDeque::new(),
            answers: Vec::new(),
        };
        let Some(filter) = K::inbox_filter(&self.id).filter(|_| K::ANSWERS && from <= to) else {
            return Ok(answering);
        };
        let stored = runtime
            .journal
            .inbox_messages(K::INBOX_STREAM, &filter, from, to)
            .await
            .map_err(EntityError::from)?;
        let inbox = playhead_proto::subjects::Inbox::ALL
            .iter()
            .copied()
            .find(|inbox| inbox.stream_name() == K::INBOX_STREAM);
        for (seq, stored) in stored {
            let Some((command, true)) =
                K::stored_command(&stored.subject, &stored.headers, &stored.payload)
            else {
                continue;
            };
            // The intake dead-lettered a command whose reply subject its requester did not sign:
            // it is not answered now either.
            let reply = stored
                .headers
                .get(playhead_proto::headers::REPLY_TO)
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default();
            let signed = inbox.is_some_and(|inbox| {
                crate::ingest::check_reply_signature(
                    runtime.requesters.as_deref(),
                    inbox,
                    &stored.subject,
                    Some(&stored.headers),
                    &reply,
                )
                .is_ok()
            });
            if !signed {
                continue;
            }
            // Filed when it was decided: then it is the answer that may have been sent.
            if runtime
                .storage
                .answers
                .get(K::FAMILY.token(), self.id.as_ref(), seq)
                .map_err(EntityError::from)?
                .is_some()
            {
                continue;
            }
            answering.awaiting.push_back(Awaiting {
                seq,
                command,
                now: Timestamp::from_millis(stored.stored_at_millis),
            });
        }
        Ok(answering)
    }

    /// Answers the awaited commands stored before `inbox_seq` that changed nothing: decided
    /// again against the records as they were then (deciders are pure), which are the records
    /// now, before the decision of `inbox_seq` is folded.
    fn answer_unchanged_before(
        &self,
        context: &K::Context,
        records: &mut K::Records,
        inbox_seq: u64,
        answering: &mut Answering<K>,
    ) -> Result<(), EntityError> {
        while let Some(mut awaiting) = answering
            .awaiting
            .pop_front_if(|awaiting| awaiting.seq < inbox_seq)
        {
            // A command that would change something now, yet has no decision in the journal,
            // gets no answer here (it is answered from the state if it comes back).
            if let Some(Some(answer)) = self.answer_if_unchanged(
                context,
                records,
                &mut awaiting.command,
                (awaiting.seq, awaiting.now),
            )? {
                answering.answers.push((awaiting.seq, answer));
            }
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
        answering: &mut Answering<K>,
    ) -> Result<(), SliceError> {
        let Some(last) = decision.last() else {
            return Ok(());
        };
        let (inbox_seq, sequence) = (last.inbox_seq, last.sequence);
        let events = self.decode_all(&decision)?;
        for event in &events {
            K::prepare_event(context, &self.id, &mut loaded.records, event)?;
        }
        self.answer_unchanged_before(context, &mut loaded.records, inbox_seq, answering)?;
        K::apply(&mut loaded.records, inbox_seq, &events, true);
        if let Some(awaiting) = answering
            .awaiting
            .pop_front_if(|awaiting| awaiting.seq == inbox_seq)
            && !K::holds_later(&loaded.records, &awaiting.command, inbox_seq)
            && let Some(answer) = K::answer(
                context,
                &self.id,
                &loaded.records,
                &awaiting.command,
                Decided::Events(&events),
                awaiting.now,
            )
        {
            answering.answers.push((inbox_seq, answer));
        }
        loaded.sequences.last_inbox = loaded.sequences.last_inbox.max(inbox_seq);
        loaded.sequences.last_journal = sequence;
        if loaded.replayed.len() == REPLAYED_KEPT {
            loaded.replayed.remove(0);
        }
        loaded.replayed.push(Replayed {
            inbox_seq,
            events: events.clone(),
            records: loaded.records.clone(),
        });
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

/// The journal records of an entity as its decisions, in order, and the part of a last one a
/// crash cut short (empty when the last is whole). A decision cut short and followed by
/// others is among the decisions: it stands as it is.
fn decisions(
    records: Vec<JournalRecord>,
) -> Result<(Vec<Vec<JournalRecord>>, Vec<JournalRecord>), SliceError> {
    let mut decisions = Vec::new();
    let mut decision: Vec<JournalRecord> = Vec::new();
    for record in records {
        if decision
            .first()
            .is_some_and(|first| first.inbox_seq != record.inbox_seq)
        {
            decisions.push(std::mem::take(&mut decision));
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
            decisions.push(std::mem::take(&mut decision));
        }
    }
    Ok((decisions, decision))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sequence: u64, inbox_seq: u64, index: u32, count: u32) -> JournalRecord {
        JournalRecord {
            sequence,
            event_name: "Event".into(),
            version: 1,
            inbox_seq,
            index,
            count,
            payload: bytes::Bytes::new(),
            stored_at: Timestamp::from_millis(0),
        }
    }

    fn shape(decisions: &[Vec<JournalRecord>]) -> Vec<Vec<u64>> {
        decisions
            .iter()
            .map(|decision| decision.iter().map(|record| record.sequence).collect())
            .collect()
    }

    #[test]
    fn given_whole_decisions_a_part_cut_short_and_a_trailing_part_when_grouped_then_only_the_trailing_part_waits()
     {
        let records = vec![
            record(1, 10, 0, 2),
            record(2, 10, 1, 2),
            // Cut short, followed by another decision: it stands.
            record(3, 11, 0, 2),
            record(4, 12, 0, 1),
            // Cut short at the end: its command may come back.
            record(5, 13, 0, 3),
            record(6, 13, 1, 3),
        ];

        let (decisions, cut_short) = decisions(records).unwrap();

        assert_eq!(shape(&decisions), vec![vec![1, 2], vec![3], vec![4]]);
        assert_eq!(shape(&[cut_short]), vec![vec![5, 6]]);
    }

    #[test]
    fn given_an_event_out_of_its_place_when_grouped_then_the_journal_is_malformed() {
        let records = vec![record(1, 10, 0, 2), record(2, 11, 1, 2)];

        let error = decisions(records).unwrap_err();

        assert!(
            matches!(
                error.error,
                EntityError::Journal(JournalError::Malformed { sequence: 2, .. })
            ),
            "{:?}",
            error.error
        );
    }

    #[test]
    fn given_no_records_when_grouped_then_nothing_to_fold_or_wait_for() {
        let (decisions, cut_short) = decisions(Vec::new()).unwrap();

        assert!(decisions.is_empty() && cut_short.is_empty());
    }
}
