//! `ShowService`: upcoming shows of an artist, of the artists recently played on a station, or
//! of the artists a listener recently listened to, read through the node's `list_shows` query.
//! By artist or station every role may ask; by listener, as reading that listener's state.

use std::sync::Arc;

use playhead_client::query::shows_query;
use playhead_proto::subjects::Query;
use playhead_proto::v1::list_shows_request::Selector;
use playhead_proto::v1::show_service_server::ShowService;
use playhead_proto::v1::{ListShowsRequest, ListShowsResponse};
use tonic::{Request, Response, Status};

use crate::auth::{Access, authorize};
use crate::error::respond;
use crate::node_client::NodeClient;

pub struct ShowApi {
    pub node: Arc<NodeClient>,
}

/// What a `ListShows` request reads: a listener's artists are its state; an artist's or a
/// station's shows are public. A request without a selector reads nothing (it is refused as
/// invalid after this check).
pub fn shows_access(request: &ListShowsRequest) -> Access<'_> {
    match &request.selector {
        Some(Selector::UserId(user)) => Access::ReadUser(user),
        Some(Selector::Artist(_) | Selector::StationId(_)) | None => Access::ReadShows,
    }
}

#[tonic::async_trait]
impl ShowService for ShowApi {
    async fn list_shows(
        &self,
        request: Request<ListShowsRequest>,
    ) -> Result<Response<ListShowsResponse>, Status> {
        authorize(&request, shows_access(request.get_ref()))?;
        respond(
            self.node
                .checked_query(Query::ListShows, request.get_ref(), shows_query)
                .await,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::auth::{Principal, Role};

    fn by(selector: Selector) -> ListShowsRequest {
        ListShowsRequest {
            selector: Some(selector),
            ..ListShowsRequest::default()
        }
    }

    #[test]
    fn shows_of_a_listener_are_read_as_its_state_and_the_others_by_anyone() {
        let principal = |role, subject: &str| Principal {
            subject: subject.into(),
            role,
            stations: BTreeSet::new(),
        };
        let ann = principal(Role::Listener, "ann");
        let station = principal(Role::Station, "poller");
        let backoffice = principal(Role::Backoffice, "crm");
        let public = [
            by(Selector::Artist("Nina Simone".into())),
            by(Selector::StationId("radio-1".into())),
        ];
        for request in &public {
            assert_eq!(shows_access(request), Access::ReadShows);
            for who in [&ann, &station, &backoffice] {
                assert!(who.allows(shows_access(request)).is_ok(), "{who:?}");
            }
        }
        let of_ann = by(Selector::UserId("ann".into()));
        let of_bob = by(Selector::UserId("bob".into()));
        assert!(ann.allows(shows_access(&of_ann)).is_ok());
        assert!(ann.allows(shows_access(&of_bob)).is_err());
        assert!(station.allows(shows_access(&of_ann)).is_err());
        assert!(backoffice.allows(shows_access(&of_bob)).is_ok());
        assert_eq!(
            shows_access(&ListShowsRequest::default()),
            Access::ReadShows
        );
    }
}
