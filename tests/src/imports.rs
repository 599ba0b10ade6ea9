//! Imports from the outside, as a scraper does them: a batch stored in `PLAYHEAD_IMPORTS` and
//! the node's status of an import (shared by the integration tests and the benchmark).

use std::collections::HashMap;

use async_nats::jetstream::{self, object_store::ObjectMetadata};
use playhead_proto::subjects::{IMPORTS_BUCKET, Query};
use playhead_proto::v1;
use prost::Message as _;

/// Stores `data` as object `name` of `PLAYHEAD_IMPORTS`, its format named by `content_type`.
pub async fn upload_batch(
    jetstream: &jetstream::Context,
    name: &str,
    content_type: &str,
    data: Vec<u8>,
) -> anyhow::Result<()> {
    let bucket = jetstream
        .get_object_store(IMPORTS_BUCKET)
        .await
        .map_err(|error| anyhow::anyhow!("cannot open {IMPORTS_BUCKET}: {error}"))?;
    let metadata = ObjectMetadata {
        name: name.to_owned(),
        metadata: HashMap::from([("content-type".to_owned(), content_type.to_owned())]),
        ..Default::default()
    };
    bucket
        .put(metadata, &mut std::io::Cursor::new(data))
        .await
        .map_err(|error| anyhow::anyhow!("cannot store {name}: {error}"))?;
    Ok(())
}

/// The import's status through the node's query service (`None`: no answer, or an error such
/// as an unknown import).
pub async fn import_status(
    client: &async_nats::Client,
    import_id: &str,
) -> Option<v1::ImportStatus> {
    let request = v1::GetImportRequest {
        import_id: import_id.to_owned(),
    };
    let answer = client
        .request(Query::GetImport.subject(), request.encode_to_vec().into())
        .await
        .ok()?;
    if answer
        .headers
        .as_ref()
        .is_some_and(|headers| headers.get("Nats-Service-Error-Code").is_some())
    {
        return None;
    }
    v1::ImportStatus::decode(answer.payload).ok()
}

/// Whether nothing more happens to the import.
pub fn is_finished(status: &v1::ImportStatus) -> bool {
    status.state == v1::ImportState::Completed as i32
        || status.state == v1::ImportState::Failed as i32
}
