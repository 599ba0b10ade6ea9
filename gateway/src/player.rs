//! `PlayerService`: commands go into the user inbox with a reply subject and the handler waits
//! for the user actor's decision; sessions are read through the node's query endpoints.
//! Outcomes that are answers (OK, SKIP_LIMITED, COMPLETED) return the reply; NOT_FOUND and
//! REJECTED become gRPC errors, mapped once in [`crate::error`].

use std::sync::Arc;

use playhead_client::command;
use playhead_client::query::{session_query, sessions_query};
use playhead_proto::ids::UserId;
use playhead_proto::subjects::{Query, UserKind, user_subject};
use playhead_proto::v1::player_command::Command;
use playhead_proto::v1::player_service_server::PlayerService;
use playhead_proto::v1::{
    GetSessionRequest, ListSessionsRequest, ListSessionsResponse, NextTrack, PlayerCommand,
    PlayerOutcome, PlayerReply, PlayerSession, PlayerTrackRequest, SkipTrack, StartPlaylistRequest,
};
use tonic::{Request, Response, Status};

use crate::auth::{Access, authorize};
use crate::error::{GatewayError, respond};
use crate::metrics::GatewayMetrics;
use crate::node_client::{CommandOutcome, NodeClient, command_headers, idempotency_key};

pub struct PlayerApi {
    pub node: Arc<NodeClient>,
    pub metrics: Arc<GatewayMetrics>,
}

impl PlayerApi {
    /// Validates as the node's screen does (so bad input is refused here, not dead-lettered),
    /// publishes, and waits for the decision.
    async fn command(
        &self,
        user_id: &str,
        command: Command,
        idempotency_key: Option<&str>,
    ) -> Result<PlayerReply, GatewayError> {
        let user = UserId::parse(user_id)?;
        let wire = PlayerCommand {
            user_id: user.to_string(),
            command: Some(command),
        };
        // Refused here as the node would refuse it (same checks, same words), the track count
        // before the size, and both before anything is encoded.
        let playlist = command::player_command(&wire)?;
        if let Some(Command::Start(start)) = &wire.command {
            command::check_tracks(&start.tracks)?;
        }
        let payload = self.node.encode_command(&wire)?;
        let headers = command_headers(idempotency_key)?;
        let outcome = self
            .node
            .command::<PlayerReply>(
                user_subject(&user, UserKind::Player),
                headers,
                payload,
                self.node.request_timeout,
            )
            .await?;
        let reply = match outcome {
            CommandOutcome::Decided(reply) => reply,
            CommandOutcome::Duplicate => {
                // The first copy was decided already; show where the session is now.
                let session = self
                    .get_session(GetSessionRequest {
                        user_id: user.to_string(),
                        playlist_id: playlist.to_string(),
                    })
                    .await?;
                return Ok(PlayerReply {
                    outcome: PlayerOutcome::Ok as i32,
                    session: Some(session),
                    retry_after_ms: 0,
                    detail: "a request with this idempotency-key was already applied; \
                             this is the session now"
                        .into(),
                });
            }
        };
        match PlayerOutcome::try_from(reply.outcome) {
            Ok(PlayerOutcome::NotFound) => Err(GatewayError::NotFound(reply.detail)),
            Ok(PlayerOutcome::Rejected) => Err(GatewayError::InvalidArgument(reply.detail)),
            Ok(PlayerOutcome::SessionLimit) => Err(GatewayError::FailedPrecondition(reply.detail)),
            Ok(PlayerOutcome::Ok | PlayerOutcome::SkipLimited | PlayerOutcome::Completed) => {
                Ok(reply)
            }
            Ok(PlayerOutcome::Unspecified) | Err(_) => Err(GatewayError::Internal(format!(
                "the node answered with an unknown outcome {}",
                reply.outcome
            ))),
        }
    }

    async fn get_session(&self, request: GetSessionRequest) -> Result<PlayerSession, GatewayError> {
        self.node
            .checked_query(Query::GetSession, &request, session_query)
            .await
    }

    async fn list_sessions(
        &self,
        request: ListSessionsRequest,
    ) -> Result<ListSessionsResponse, GatewayError> {
        self.node
            .checked_query(Query::ListSessions, &request, sessions_query)
            .await
    }

    /// `NextTrack` and `SkipTrack`: the same request, a different command.
    async fn track_command(
        &self,
        request: Request<PlayerTrackRequest>,
        command: fn(String) -> Command,
    ) -> Result<Response<PlayerReply>, Status> {
        authorize(&request, Access::ActFor(&request.get_ref().user_id))?;
        let key = idempotency_key(&request);
        let request = request.into_inner();
        let result = self
            .command(
                &request.user_id,
                command(request.playlist_id),
                key.as_deref(),
            )
            .await;
        respond(result)
    }
}

#[tonic::async_trait]
impl PlayerService for PlayerApi {
    async fn start_playlist(
        &self,
        request: Request<StartPlaylistRequest>,
    ) -> Result<Response<PlayerReply>, Status> {
        authorize(&request, Access::ActFor(&request.get_ref().user_id))?;
        let key = idempotency_key(&request);
        let request = request.into_inner();
        let result = match request.start {
            Some(start) => {
                self.command(&request.user_id, Command::Start(start), key.as_deref())
                    .await
            }
            None => Err(GatewayError::InvalidArgument(
                "start is required (playlist_id and tracks)".into(),
            )),
        };
        respond(result)
    }

    async fn next_track(
        &self,
        request: Request<PlayerTrackRequest>,
    ) -> Result<Response<PlayerReply>, Status> {
        self.track_command(request, |playlist_id| {
            Command::Next(NextTrack { playlist_id })
        })
        .await
    }

    async fn skip_track(
        &self,
        request: Request<PlayerTrackRequest>,
    ) -> Result<Response<PlayerReply>, Status> {
        self.track_command(request, |playlist_id| {
            Command::Skip(SkipTrack { playlist_id })
        })
        .await
    }

    async fn get_session(
        &self,
        request: Request<GetSessionRequest>,
    ) -> Result<Response<PlayerSession>, Status> {
        authorize(&request, Access::ReadUser(&request.get_ref().user_id))?;
        let result = self.get_session(request.into_inner()).await;
        respond(result)
    }

    async fn list_sessions(
        &self,
        request: Request<ListSessionsRequest>,
    ) -> Result<Response<ListSessionsResponse>, Status> {
        authorize(&request, Access::ReadUser(&request.get_ref().user_id))?;
        let result = self.list_sessions(request.into_inner()).await;
        respond(result)
    }
}
