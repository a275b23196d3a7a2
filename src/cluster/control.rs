//! Requests to every node and their answers: the cluster-wide session list,
//! a kill on the node holding the session, and the count of sessions a
//! revocation closed.
//!
//! A request is published on [`CHANNEL`] with a fresh id; each node pushes
//! its answer to `wsgate:reply:<id>` (a list that expires by itself), and
//! the asking node reads that list until every node live at the time of
//! the request has answered, or [`ANSWER_WITHIN`] has passed. A node that
//! does not answer in time is left out and named in the log; the admin
//! call never hangs on it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::link::LinkError;
use super::Cluster;
use crate::session::{CloseReason, SessionHandle, SessionId};

const CHANNEL: &str = "wsgate:cluster";
const REPLY_PREFIX: &str = "wsgate:reply:";
/// How long answers are kept in Redis for the asker.
const REPLY_TTL_MS: u64 = 30_000;
/// How long the asking node waits for the others.
pub const ANSWER_WITHIN: Duration = Duration::from_millis(1500);
const POLL_EVERY: Duration = Duration::from_millis(10);
const PING_EVERY: Duration = Duration::from_secs(3);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    List {
        req: String,
        from: String,
        #[serde(default)]
        filter: Filter,
    },
    Kill {
        req: String,
        node: String,
        id: SessionId,
    },
}

/// Which sessions a list wants (`GET /admin/sessions?sub=…&route=…`):
/// applied on each node, so only what matches crosses Redis.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Filter {
    pub node: Option<String>,
    pub route: Option<String>,
    pub iss: Option<String>,
    pub sub: Option<String>,
}

impl Filter {
    pub fn matches(&self, s: &SessionHandle) -> bool {
        let t = s.token();
        let claim = |want: &Option<String>, got: Option<&String>| {
            want.as_ref().is_none_or(|w| got == Some(w))
        };
        self.route.as_deref().is_none_or(|r| r == &*s.route)
            && claim(&self.iss, t.as_ref().and_then(|t| t.iss.as_ref()))
            && claim(&self.sub, t.as_ref().and_then(|t| t.sub.as_ref()))
    }
}

/// A request id: random, so answers of two requests never mix.
fn request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// One session as `GET /admin/sessions` shows it. With a node, the id is
/// qualified by it (`<node>:<n>`) so a DELETE on any node is unambiguous.
pub fn session_json(s: &SessionHandle, node: Option<&str>) -> Value {
    let now = crate::session::unix_now();
    let t = s.token();
    let t = t.as_deref();
    let [msgs_up, bytes_up, msgs_down, bytes_down] = s.tally.snapshot();
    let mut v = json!({
        "id": match node {
            Some(n) => format!("{n}:{}", s.id),
            None => s.id.to_string(),
        },
        "route": &*s.route,
        "iss": t.and_then(|t| t.iss.clone()),
        "sub": t.and_then(|t| t.sub.clone()),
        "jti": t.and_then(|t| t.jti.clone()),
        "remote_addr": s.remote_addr.to_string(),
        "connected_at": s.connected_at,
        "expires_at": s.expires_at(),
        // Extensions for the admin page: derived times and live traffic.
        "issuer_id": t.map(|t| t.issuer_id.as_str()),
        "age_seconds": now - s.connected_at,
        "expires_in_seconds": s.expires_at().map(|e| e - now),
        "messages_to_upstream": msgs_up,
        "bytes_to_upstream": bytes_up,
        "messages_to_client": msgs_down,
        "bytes_to_client": bytes_down,
    });
    if let (Some(n), Some(map)) = (node, v.as_object_mut()) {
        map.insert("node".into(), json!(n));
    }
    v
}

/// A revocation's question to the other nodes: how many did you close?
pub struct Ask {
    req: String,
    /// The nodes that must answer (live ones, this one excepted).
    others: Vec<String>,
    /// Travels with the revocation: `<asking node> <request id>`.
    pub tag: String,
}

impl Cluster {
    fn local_sessions(&self, filter: &Filter) -> Vec<Value> {
        if filter.node.as_deref().is_some_and(|n| n != &*self.node) {
            return Vec::new();
        }
        let mut all = self.registry.all();
        all.retain(|s| filter.matches(s));
        all.sort_by_key(|s| s.id);
        all.iter()
            .map(|s| session_json(s, Some(&self.node)))
            .collect()
    }

    async fn others(&self) -> Result<Vec<String>, LinkError> {
        let mut live = self.live_nodes().await?;
        live.retain(|n| n != &*self.node);
        Ok(live)
    }

    async fn publish(&self, r: &Request) -> Result<(), LinkError> {
        let text = serde_json::to_string(r).unwrap_or_default();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(CHANNEL).arg(text);
        self.link.query("publish", &cmd).await
    }

    async fn answer(&self, req: &str, value: Value) {
        let key = format!("{REPLY_PREFIX}{req}");
        let mut pipe = redis::pipe();
        pipe.cmd("RPUSH").arg(&key).arg(value.to_string()).ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(REPLY_TTL_MS).ignore();
        if let Err(e) = self.link.query::<()>("answer", &pipe).await {
            tracing::warn!(error = %e, "cluster request not answered");
        }
    }

    /// Reads the answers to `req` until each of `expect` answered or time
    /// is up. Each answer is a JSON object with `node`.
    async fn gather(&self, req: &str, expect: &[String]) -> Result<Vec<Value>, LinkError> {
        let key = format!("{REPLY_PREFIX}{req}");
        let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
        let mut got: Vec<Value> = Vec::new();
        loop {
            let mut cmd = redis::cmd("LRANGE");
            cmd.arg(&key).arg(got.len()).arg(-1);
            let more: Vec<String> = self.link.query("gathering answers", &cmd).await?;
            got.extend(more.iter().filter_map(|m| serde_json::from_str(m).ok()));
            let answered: HashSet<&str> = got.iter().filter_map(|v| v["node"].as_str()).collect();
            let missing: Vec<&String> = expect
                .iter()
                .filter(|n| !answered.contains(n.as_str()))
                .collect();
            if missing.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(nodes = ?missing, "nodes did not answer in time; left out");
                break;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        let mut del = redis::cmd("DEL");
        del.arg(&key);
        let _ = self.link.query::<()>("cleanup", &del).await;
        Ok(got)
    }

    /// Every live node's sessions that `filter` keeps, this node's first.
    pub async fn list(&self, filter: Filter) -> Result<Vec<Value>, LinkError> {
        let mut all = self.local_sessions(&filter);
        let mut others = self.others().await?;
        if let Some(n) = &filter.node {
            others.retain(|o| o == n);
        }
        if others.is_empty() {
            return Ok(all);
        }
        let req = request_id();
        self.publish(&Request::List {
            req: req.clone(),
            from: self.node.to_string(),
            filter,
        })
        .await?;
        for answer in self.gather(&req, &others).await? {
            if let Some(Value::Array(items)) = answer.get("sessions") {
                all.extend(items.iter().cloned());
            }
        }
        Ok(all)
    }

    /// Closes session `id` of `node` with 4403. `Ok(false)`: no such session
    /// (or its node is gone).
    pub async fn kill(&self, node: &str, id: SessionId) -> Result<bool, LinkError> {
        if node == &*self.node {
            return Ok(self.registry.kill(id, CloseReason::Terminated));
        }
        if !self.others().await?.iter().any(|n| n == node) {
            return Ok(false);
        }
        let req = request_id();
        self.publish(&Request::Kill {
            req: req.clone(),
            node: node.to_owned(),
            id,
        })
        .await?;
        let answers = self.gather(&req, &[node.to_owned()]).await?;
        Ok(answers.iter().any(|a| a["found"] == json!(true)))
    }

    /// Prepares the question a revocation carries to the other nodes.
    pub async fn ask(&self) -> Ask {
        let req = request_id();
        let others = match self.others().await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "revocation: other nodes unknown; `closed` counts this node only");
                Vec::new()
            }
        };
        Ask {
            tag: format!("{} {req}", self.node),
            req,
            others,
        }
    }

    /// How many sessions the other nodes closed for the revocation `ask`.
    pub async fn closed_elsewhere(&self, ask: Ask) -> usize {
        if ask.others.is_empty() {
            return 0;
        }
        match self.gather(&ask.req, &ask.others).await {
            Ok(answers) => answers
                .iter()
                .filter_map(|a| a["closed"].as_u64())
                .sum::<u64>() as usize,
            Err(e) => {
                tracing::warn!(error = %e, "revocation: counts of other nodes unreadable");
                0
            }
        }
    }

    /// Called once a revocation carrying `tag` is applied here: tells the
    /// asking node how many sessions it closed.
    pub fn report(self: &Arc<Self>, tag: &str, closed: usize) {
        let Some((from, req)) = tag.split_once(' ') else {
            return;
        };
        if from == &*self.node {
            return;
        }
        let me = Arc::clone(self);
        let req = req.to_owned();
        self.tasks.spawn(async move {
            let node = me.node.to_string();
            me.answer(&req, json!({"node": node, "closed": closed}))
                .await;
        });
    }

    async fn handle(self: &Arc<Self>, r: Request) {
        match r {
            Request::List { req, from, filter } if from != *self.node => {
                if filter.node.as_deref().is_some_and(|n| n != &*self.node) {
                    return;
                }
                let sessions = self.local_sessions(&filter);
                self.answer(&req, json!({"node": &*self.node, "sessions": sessions}))
                    .await;
            }
            Request::Kill { req, node, id } if node == *self.node => {
                let found = self.registry.kill(id, CloseReason::Terminated);
                self.answer(&req, json!({"node": &*self.node, "found": found}))
                    .await;
            }
            _ => {}
        }
    }

    async fn subscribed(self: &Arc<Self>, connected: &mut bool) -> Result<(), LinkError> {
        let mut pubsub = self.link.pubsub().await?;
        tokio::time::timeout(super::link::OP_TIMEOUT, pubsub.subscribe(CHANNEL))
            .await
            .map_err(|_| LinkError::Timeout("subscribe"))??;
        if !*connected {
            tracing::info!(node = %self.node, "cluster requests subscribed");
            *connected = true;
        }
        let (mut ctl, mut stream) = pubsub.split();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Ok(()),
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return Err(LinkError::Timeout("subscription closed"));
                    };
                    let parsed = msg
                        .get_payload::<String>()
                        .ok()
                        .and_then(|s| serde_json::from_str::<Request>(&s).ok());
                    match parsed {
                        // Answers go out on their own task: a slow one never
                        // holds up the next request.
                        Some(r) => {
                            let me = Arc::clone(self);
                            self.tasks.spawn(async move { me.handle(r).await });
                        }
                        None => tracing::warn!("unreadable cluster request skipped"),
                    }
                }
                _ = ping.tick() => {
                    tokio::time::timeout(super::link::OP_TIMEOUT, ctl.ping::<redis::Value>())
                        .await
                        .map_err(|_| LinkError::Timeout("ping"))??;
                }
            }
        }
    }
}

/// The request subscription, kept up until the node stops.
pub async fn serve(cluster: Arc<Cluster>) {
    let mut connected = false;
    let mut backoff = BACKOFF_MIN;
    while !cluster.cancel.is_cancelled() {
        let started = tokio::time::Instant::now();
        if let Err(e) = cluster.subscribed(&mut connected).await {
            if connected {
                tracing::warn!(error = %e, "cluster request subscription lost; resubscribing");
                connected = false;
            }
        }
        if started.elapsed() > BACKOFF_MAX {
            backoff = BACKOFF_MIN;
        }
        tokio::select! {
            _ = cluster.cancel.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
