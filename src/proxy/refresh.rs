//! In-band token refresh (`session.refresh: true`): the client sends
//! `{"type":"wsgate.refresh","token":"<jwt>"}`; the gateway takes the frame,
//! verifies the token like a handshake would (signature, claims, revocation,
//! the route's rules), requires the same `iss` and `sub`, and moves the
//! session's expiry. The frame is never forwarded.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Deserialize;

use crate::app::Gateway;
use crate::handshake::{self, Reject};
use crate::proxy::relay::Interceptor;
use crate::route::Params;
use crate::session::SessionHandle;
use crate::state::Route;

pub struct Refresher {
    gw: Arc<Gateway>,
    route: Arc<Route>,
    params: Params,
    session: Arc<SessionHandle>,
}

#[derive(Deserialize)]
struct RefreshMessage {
    #[serde(rename = "type")]
    kind: String,
    token: String,
}

impl Refresher {
    pub fn new(
        gw: Arc<Gateway>,
        route: Arc<Route>,
        params: Params,
        session: Arc<SessionHandle>,
    ) -> Self {
        Self {
            gw,
            route,
            params,
            session,
        }
    }

    async fn refresh(&self, token: String) -> String {
        match self.try_refresh(&token).await {
            Ok(exp) => serde_json::json!({"type": "wsgate.refreshed", "exp": exp}).to_string(),
            Err(error) => {
                serde_json::json!({"type": "wsgate.refresh_failed", "error": error}).to_string()
            }
        }
    }

    async fn try_refresh(&self, token: &str) -> Result<Option<i64>, &'static str> {
        let state = self.gw.state.load_full();
        let verified = handshake::verify(&self.gw, &state, &self.route, token)
            .await
            .map_err(|r| match r {
                Reject::InvalidToken(d) => d,
                _ => "invalid token",
            })?;
        let current = self.session.token();
        let same = current.as_ref().is_some_and(|c| {
            c.iss == verified.iss && c.sub == verified.sub && c.issuer_id == verified.issuer_id
        });
        if !same {
            return Err("token is for another subject");
        }
        self.route
            .rules
            .check(&verified.claims, &self.params)
            .map_err(|_| "forbidden")?;
        let exp = verified.exp;
        self.gw.registry.refresh(&self.session, verified);
        Ok(exp)
    }
}

fn parse(text: &str) -> Option<RefreshMessage> {
    // Cheap test first: most frames are application traffic.
    if !text.contains("wsgate.refresh") {
        return None;
    }
    serde_json::from_str::<RefreshMessage>(text)
        .ok()
        .filter(|m| m.kind == "wsgate.refresh")
}

impl Interceptor for Refresher {
    fn wants(&self, text: &str) -> bool {
        parse(text).is_some()
    }

    fn answer<'a>(&'a self, text: String) -> Pin<Box<dyn Future<Output = String> + Send + 'a>> {
        Box::pin(async move {
            match parse(&text) {
                Some(msg) => self.refresh(msg.token).await,
                None => serde_json::json!({
                    "type": "wsgate.refresh_failed",
                    "error": "malformed refresh message"
                })
                .to_string(),
            }
        })
    }
}
