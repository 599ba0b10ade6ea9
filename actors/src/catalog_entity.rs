//! The content entity: a thin shell around the catalog decider. It keeps each item's tags
//! (what entitlement is checked against) with the last applied inbox sequence.

use std::sync::Arc;

use playhead_proto::ids::ContentId;

use crate::domain::catalog::{CatalogCommand, CatalogDecider};
use crate::domain::decider::Decider;
use crate::sharding::{Entity, EntityError, Envelope, Outcome};
use crate::storage::Storage;
use crate::storage::catalog_store::StoredContent;

/// What every content entity shares.
pub struct CatalogContext {
    pub storage: Storage,
}

pub struct ContentEntity {
    id: ContentId,
    stored: StoredContent,
}

impl Entity for ContentEntity {
    type Id = ContentId;
    type Command = CatalogCommand;
    type Context = CatalogContext;

    const KIND: &'static str = "content";

    fn load(id: ContentId, context: &CatalogContext) -> Result<Self, EntityError> {
        let stored = context.storage.catalog.load(&id)?;
        Ok(Self { id, stored })
    }

    async fn apply(
        &mut self,
        context: &Arc<CatalogContext>,
        batch: Vec<Envelope<CatalogCommand>>,
    ) -> Result<Vec<Outcome>, EntityError> {
        let mut next = self.stored.clone();
        let mut changed = false;
        let mut outcomes = Vec::with_capacity(batch.len());
        for envelope in &batch {
            if envelope.seq <= next.last_applied_seq {
                outcomes.push(Outcome::Duplicate);
                continue;
            }
            match CatalogDecider.decide(&envelope.command, &next.state, envelope.now) {
                Ok(events) if events.is_empty() => outcomes.push(Outcome::Unchanged),
                Ok(events) => {
                    outcomes.push(Outcome::Applied {
                        events: events.len(),
                    });
                    next.state = CatalogDecider::fold(next.state, &events);
                    changed = true;
                }
                Err(error) => outcomes.push(Outcome::Rejected {
                    reason: error.to_string(),
                }),
            }
            next.last_applied_seq = envelope.seq;
        }
        if changed {
            context.storage.catalog.commit(&self.id, &next)?;
        }
        self.stored = next;
        Ok(outcomes)
    }
}
