//! In-band token refresh (`session.refresh: true`): the client sends
//! `{"type":"wsgate.refresh","token":"<jwt>"}`; the gateway takes the frame
//! (never forwarded), judges the token with [`admit`] against the
//! config in force now (not the one of the handshake), requires the same
//! `iss` and `sub` as the session's token, and moves the session's expiry.
//! A session whose token has no `sub` cannot be refreshed: nothing would
//! tie the new token to the same principal.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Deserialize;

use super::admit::{admit, confirm, Attempt, Credential};
use crate::gateway::Gateway;
use crate::proxy::relay::Interceptor;
use crate::session::{CloseReason, SessionHandle};
use crate::snapshot::Route;

/// The refresh interceptor of a session, when its route accepts refreshes.
pub fn interceptor(
    gw: &Arc<Gateway>,
    route: &Route,
    session: &Arc<SessionHandle>,
) -> Option<Box<dyn Interceptor>> {
    route.cfg.session.refresh.then(|| {
        Box::new(Refresher {
            gw: Arc::clone(gw),
            session: Arc::clone(session),
        }) as Box<dyn Interceptor>
    })
}

pub struct Refresher {
    gw: Arc<Gateway>,
    session: Arc<SessionHandle>,
}

#[derive(Deserialize)]
struct RefreshMessage {
    #[serde(rename = "type")]
    kind: String,
    token: String,
}

impl Refresher {
    async fn refresh(&self, token: String) -> String {
        match self.try_refresh(&token).await {
            Ok(exp) => serde_json::json!({"type": "wsgate.refreshed", "exp": exp}).to_string(),
            Err(error) => {
                serde_json::json!({"type": "wsgate.refresh_failed", "error": error}).to_string()
            }
        }
    }

    async fn try_refresh(&self, token: &str) -> Result<Option<i64>, &'static str> {
        let current = self.session.token().ok_or("session has no token")?;
        let sub = current.sub.as_deref().ok_or("session has no subject")?;
        let snapshot = self.gw.snapshot.load_full();
        let route = snapshot
            .route(&self.session.route)
            .ok_or("route no longer exists")?;
        let attempt = Attempt {
            route,
            params: &self.session.params,
            origins: &self.session.admitted.origins,
            credential: Credential::Presented(token),
        };
        let admission = admit(&self.gw, &snapshot, attempt)
            .await
            .map_err(|r| r.description())?;
        let verified = admission.token.ok_or("route takes no token")?;
        // The same principal: same `sub`, from the same `iss` (or, for
        // tokens without `iss`, the same configured issuer).
        let same_issuer = match (&current.iss, &verified.iss) {
            (Some(a), Some(b)) => a == b,
            (None, None) => current.issuer_id == verified.issuer_id,
            _ => false,
        };
        if !same_issuer || verified.sub.as_deref() != Some(sub) {
            return Err("token is for another subject");
        }
        let exp = verified.exp;
        self.gw.registry.refresh(&self.session, verified);
        // A reload that came in while this token was being judged re-checked
        // the session with its old token.
        if confirm(&self.gw, &snapshot, &self.session).await.is_err() {
            self.session.close(CloseReason::Policy);
            return Err("access revoked by policy");
        }
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
