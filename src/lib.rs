//! wsgate: a WebSocket reverse proxy that authenticates and authorizes every
//! session with a JWT, and ends the session when its authority ends.
//!
//! # Layout
//!
//! A connection moves through the modules in this order:
//!
//! - [`listener`]: accept loop per listener, TLS termination ([`tls`]), the
//!   HTTP/1.1 connection and its `handshake_timeout`.
//! - [`handshake`]: one request from route lookup to `101 Switching Protocols`:
//!   route → upgrade checks → admission → limits → upstream. Its [`handshake::admit`]
//!   is the one admission step, also used by `first_message`, refresh and reload.
//! - [`route`]: the route table (host/path patterns), the `require` rule engine
//!   and the `{claims.x}` / `{param}` templates. Pure functions.
//! - [`auth`]: where tokens are found, how they are verified, where keys come from.
//! - [`plain`]: plain HTTP requests on `http: proxy` routes, admitted like
//!   a handshake and proxied with a pooled client.
//! - [`upstream`]: choosing and connecting an upstream; [`affinity`] reads
//!   the key of `balance: hash`; [`pool`] is the pooled HTTP client of
//!   `http: proxy` routes.
//! - [`proxy`]: the frame pump between the two and the session task.
//! - [`io`]: buffers and stream adapters under the TLS stream and the relay.
//! - [`session`]: the registry of live sessions and the close-reason table.
//! - [`revocation`]: revocation entries and their stores.
//! - [`cluster`]: replicas on one Redis acting as one gateway (the only
//!   module that talks to Redis, for the revocation store too).
//! - [`admin`]: health, metrics and the admin API.
//!
//! Connections and their sessions run on [`workers`] (one thread and
//! runtime per core, a connection never moves); the accept loops, the
//! admin API and background work run on the control runtime.
//!
//! [`gateway`] holds what every stage shares, over the swappable
//! [`snapshot`] of the config in force; [`app`] wires it all together;
//! [`config`] turns `gateway.yaml` into a validated [`config::Config`] before
//! anything is bound; [`reload`] swaps in a new snapshot.
#![forbid(unsafe_code)]
// The listener's connection future nests the plain-HTTP proxy, the
// handshake and the session set-up; its layout needs more than the default.
#![recursion_limit = "256"]

pub mod admin;
pub mod affinity;
pub mod app;
pub mod auth;
pub mod cli;
pub mod client_addr;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod drain;
pub mod extensions;
pub mod gateway;
pub mod handshake;
pub mod io;
pub mod listener;
pub mod memory;
pub mod metrics;
pub mod pending;
pub mod plain;
pub mod pool;
pub mod proxy;
pub mod reload;
pub mod revocation;
pub mod route;
pub mod session;
pub mod signals;
pub mod snapshot;
pub mod telemetry;
pub mod tls;
pub mod token_cmd;
pub mod upstream;
pub mod workers;
