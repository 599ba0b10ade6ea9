//! Who may use the console: an operator or admin token, the same tokens as gRPC
//! ([`crate::auth`]).
//!
//! The page cannot put a header on an `EventSource`, so a person signs in once: the page posts
//! the token to `POST /api/session`, which verifies it and sets it as an `HttpOnly`,
//! `SameSite=Strict` cookie that lasts as long as the token. Every other `/api/` request needs
//! that cookie (or, for scripts, `authorization: Bearer`): none → 401, a token of another role →
//! 403. Reads need `operator` or `admin`; a replay changes state and needs `admin`.
//! `DELETE /api/session` signs out.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, ApiResult, Console};
use crate::auth::{AuthError, Denied, Principal, Role, now_secs};

/// The cookie holding the signed-in token.
pub const COOKIE: &str = "playhead_console";

/// The principal of a request: its `authorization: Bearer` header, else its session cookie.
fn authenticate(console: &Console, headers: &HeaderMap) -> Result<Principal, AuthError> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().unwrap_or_default().to_owned());
    let from_cookie = || {
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|cookies| cookies.split(';'))
            .find_map(|cookie| cookie.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .map(|token| format!("Bearer {token}"))
    };
    let authorization = bearer.or_else(from_cookie);
    console
        .keys
        .authenticate(authorization.as_deref(), now_secs())
}

/// Whether `principal` may use the console at all.
fn may_read(principal: &Principal) -> Result<(), Denied> {
    match principal.role {
        Role::Operator | Role::Admin => Ok(()),
        role => Err(Denied(format!(
            "the console is for operator and admin tokens, not {}",
            role.name()
        ))),
    }
}

/// Checks that `principal` may replay dead letters.
pub fn may_replay(principal: &Principal) -> Result<(), ApiError> {
    match principal.role {
        Role::Admin => Ok(()),
        role => Err(Denied(format!(
            "a replay changes state: it needs an admin token, not {}",
            role.name()
        ))
        .into()),
    }
}

/// The middleware in front of every `/api/` route but `/api/session`: puts the [`Principal`]
/// in the request's extensions, or answers 401 / 403.
pub async fn guard(State(console): State<Console>, mut request: Request, next: Next) -> Response {
    let principal = match authenticate(&console, request.headers()) {
        Ok(principal) => principal,
        Err(error) => return ApiError::from(error).into_response(),
    };
    if let Err(denied) = may_read(&principal) {
        return ApiError::from(denied).into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

/// `GET /api/session`: who is signed in.
pub async fn current(
    State(console): State<Console>,
    headers: HeaderMap,
) -> ApiResult<serde_json::Value> {
    let principal = authenticate(&console, &headers)?;
    may_read(&principal)?;
    Ok(Json(serde_json::json!({
        "subject": principal.subject,
        "role": principal.role.name(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    token: String,
}

/// `POST /api/session {"token": …}`: verifies the token and sets the session cookie.
pub async fn sign_in(
    State(console): State<Console>,
    Json(body): Json<SignIn>,
) -> Result<Response, ApiError> {
    let token = body.token.trim();
    let claims = console.keys.verify(token, now_secs())?;
    let principal = Principal::try_from(claims.clone())?;
    may_read(&principal)?;
    let max_age = claims.exp.saturating_sub(now_secs());
    let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}");
    let mut response = Json(serde_json::json!({
        "subject": principal.subject,
        "role": principal.role.name(),
    }))
    .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|_| AuthError::Malformed("not printable"))?,
    );
    Ok(response)
}

/// `DELETE /api/session`: forgets the cookie.
pub async fn sign_out() -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("playhead_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}
