//! Gateway errors and their one mapping to gRPC status codes.

use playhead_proto::ids::IdError;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    InvalidId(#[from] IdError),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but the state does not allow it (a listener at the session limit).
    #[error("{0}")]
    FailedPrecondition(String),
    /// No usable token.
    #[error(transparent)]
    Unauthenticated(#[from] crate::auth::AuthError),
    /// A valid token that does not cover the request.
    #[error("permission denied: {0}")]
    PermissionDenied(#[from] crate::auth::Denied),
    #[error("the broker is unavailable: {0}")]
    Unavailable(String),
    #[error("the node did not answer within {0} ms")]
    Timeout(u64),
    #[error("{0}")]
    Internal(String),
}

impl GatewayError {
    /// From a NATS service error code (HTTP-like, see `playhead_client::query::QueryError`).
    pub fn from_service_code(code: usize, status: String) -> Self {
        match code {
            400 => GatewayError::InvalidArgument(status),
            404 => GatewayError::NotFound(status),
            503 => GatewayError::Unavailable(status),
            _ => GatewayError::Internal(status),
        }
    }
}

/// A handler's result as its gRPC answer (errors mapped once, by the `From` below).
pub fn respond<T>(result: Result<T, GatewayError>) -> Result<tonic::Response<T>, tonic::Status> {
    result
        .map(tonic::Response::new)
        .map_err(tonic::Status::from)
}

impl From<GatewayError> for tonic::Status {
    fn from(error: GatewayError) -> Self {
        let message = error.to_string();
        match error {
            GatewayError::InvalidId(_) | GatewayError::InvalidArgument(_) => {
                tonic::Status::invalid_argument(message)
            }
            GatewayError::NotFound(_) => tonic::Status::not_found(message),
            GatewayError::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            GatewayError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            GatewayError::PermissionDenied(_) => tonic::Status::permission_denied(message),
            GatewayError::Unavailable(_) | GatewayError::Timeout(_) => {
                tonic::Status::unavailable(message)
            }
            GatewayError::Internal(_) => tonic::Status::internal(message),
        }
    }
}

impl GatewayError {
    /// The HTTP status of the console's JSON API for this error (the same classes as gRPC).
    pub fn http_status(&self) -> u16 {
        match self {
            GatewayError::InvalidId(_) | GatewayError::InvalidArgument(_) => 400,
            GatewayError::NotFound(_) => 404,
            GatewayError::FailedPrecondition(_) => 409,
            GatewayError::Unauthenticated(_) => 401,
            GatewayError::PermissionDenied(_) => 403,
            GatewayError::Unavailable(_) => 503,
            GatewayError::Timeout(_) => 504,
            GatewayError::Internal(_) => 500,
        }
    }
}

impl From<playhead_client::command::ValidationError> for GatewayError {
    fn from(error: playhead_client::command::ValidationError) -> Self {
        GatewayError::InvalidArgument(error.to_string())
    }
}

impl From<playhead_client::query::QueryError> for GatewayError {
    fn from(error: playhead_client::query::QueryError) -> Self {
        use playhead_client::query::QueryError;
        match error {
            QueryError::InvalidArgument(message) => GatewayError::InvalidArgument(message),
            QueryError::NotFound(message) => GatewayError::NotFound(message),
            QueryError::Internal(message) => GatewayError::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use playhead_proto::ids::StationId;

    use super::*;

    #[test]
    fn each_error_maps_to_its_code() {
        let invalid = StationId::parse("a.b").unwrap_err();
        let cases = [
            (GatewayError::from(invalid), tonic::Code::InvalidArgument),
            (GatewayError::NotFound("x".into()), tonic::Code::NotFound),
            (
                GatewayError::Unavailable("x".into()),
                tonic::Code::Unavailable,
            ),
            (GatewayError::Timeout(5), tonic::Code::Unavailable),
            (
                GatewayError::from(crate::auth::AuthError::Missing),
                tonic::Code::Unauthenticated,
            ),
            (
                GatewayError::from(crate::auth::Denied("x".into())),
                tonic::Code::PermissionDenied,
            ),
            (
                GatewayError::from_service_code(404, "x".into()),
                tonic::Code::NotFound,
            ),
            (
                GatewayError::from_service_code(500, "x".into()),
                tonic::Code::Internal,
            ),
        ];
        for (error, code) in cases {
            assert_eq!(tonic::Status::from(error).code(), code);
        }
    }
}
