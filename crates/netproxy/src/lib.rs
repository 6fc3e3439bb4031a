//! netproxy: the egress proxy engine of sandbox network policy.
//!
//! The sandbox's network namespace routes every address to listeners the supervisor binds
//! there; this crate serves them. It decides each connection and DNS question with a
//! [`Policy`] (deny rules win, then allow rules, default deny; private and metadata addresses
//! refused unless named by a CIDR rule, also after resolution), moves allowed tunnels with
//! `splice(2)`, swaps secret placeholders for their values only in TLS to the hosts the secrets
//! are bound to (following HTTP/1.1 upgrades such as WebSocket), and reports everything as
//! [`Event`]s on a bounded channel ([`Event::to_feed`] converts them for the event spool).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use netproxy::{events, Engine, EngineConfig, Listeners, Policy, SystemResolver};
//!
//! let policy = Policy::parse(["preset dev", "allow-host api.example.com"])?;
//! let (sender, mut receiver) = events::channel(1024);
//! let engine = Engine::new(EngineConfig::new(policy), Arc::new(SystemResolver), sender)?;
//! let listeners = Listeners::new().explicit(std::net::TcpListener::bind("127.0.0.1:3128")?);
//! let handle = engine.serve(listeners)?;
//! while let Some(event) = receiver.recv().await {
//!     // write it to the event spool
//! #   let _ = event; break;
//! }
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Libraries never print: decisions and events are values; errors name their input.
#![forbid(unsafe_code)]

pub mod dns;
mod engine;
pub mod events;
mod http;
pub mod policy;
mod proxy;
pub mod resolve;
pub mod secrets;
mod splice;
mod tls;

pub use engine::{
    Engine, EngineConfig, EngineError, Listeners, ServeHandle, Stats, UpstreamTrust,
    HOST_TRUST_STORE,
};
pub use events::{Event, EventName, EventReceiver, EventSender, ListenerKind, Transport};
pub use policy::{
    DecidedBy, Decision, Policy, PolicyError, Preset, Rule, RuleKind, Target, Verdict,
};
pub use resolve::{PinnedResolver, Resolver, StaticResolver, SystemResolver};
pub use secrets::{CertificateAuthority, Placement, SecretBinding, SecretError, Secrets};
