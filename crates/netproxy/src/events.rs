//! Events: every connection attempt, DNS query, decision, secret use and exfiltration attempt
//! becomes an [`Event`] sent on a bounded channel the caller drains.
//!
//! The engine never blocks on the channel and never drops an event silently: when the channel
//! is full the event is counted as lost, and a `hardbox.sensor.loss` event carrying the count is
//! sent as soon as there is room again. [`EventReceiver::lost`] gives the running total.
//!
//! Attribute names follow OpenTelemetry's semantic conventions where they exist
//! (`server.address`, `server.port`, `network.transport`, `client.address`, `network.peer.address`,
//! `dns.question.name`, `dns.answers`) and use the `hardbox.` prefix where they do not. A secret's
//! value is never part of an event: only its name.
//!
//! [`Event::to_feed`] turns an event into the sandbox event feed's model (`events::Event`, the
//! spool's line), with the same names and attributes.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::policy::{Decision, Verdict};

/// The event names of DESIGN.md §5 that this crate emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventName {
    /// A TCP connection attempt through the proxy, allowed or denied.
    #[serde(rename = "hardbox.network.connect")]
    NetworkConnect,
    /// A DNS question asked to the sandbox's resolver.
    #[serde(rename = "hardbox.dns.query")]
    DnsQuery,
    /// A placeholder replaced by a secret's value in a request to a host it is bound to.
    #[serde(rename = "hardbox.secret.use")]
    SecretUse,
    /// Something the policy refused (a connection, a DNS name, a placeholder sent elsewhere).
    #[serde(rename = "hardbox.policy.denied")]
    PolicyDenied,
    /// Events lost because the channel was full.
    #[serde(rename = "hardbox.sensor.loss")]
    SensorLoss,
}

impl EventName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NetworkConnect => "hardbox.network.connect",
            Self::DnsQuery => "hardbox.dns.query",
            Self::SecretUse => "hardbox.secret.use",
            Self::PolicyDenied => "hardbox.policy.denied",
            Self::SensorLoss => "hardbox.sensor.loss",
        }
    }
}

/// `tcp` or `udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

/// Which listener saw the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// The explicit HTTP proxy (`HTTP(S)_PROXY`): CONNECT and absolute-URI requests.
    Explicit,
    /// A transparent listener for plain HTTP (port 80): decided on the `Host` header.
    Http,
    /// A transparent listener for TLS (port 443): decided on the ClientHello's SNI.
    Tls,
    /// A transparent listener for plain TCP: decided on the destination address (and the name
    /// the DNS responder gave for it).
    Tcp,
    /// The DNS responder.
    Dns,
}

/// One event, with OpenTelemetry-style attribute names when serialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    #[serde(rename = "event.name")]
    pub name: EventName,
    /// The host the sandbox asked for (a name or an IP literal); the question for DNS.
    #[serde(rename = "server.address", skip_serializing_if = "Option::is_none")]
    pub server_address: Option<String>,
    #[serde(rename = "server.port", skip_serializing_if = "Option::is_none")]
    pub server_port: Option<u16>,
    #[serde(rename = "network.transport")]
    pub transport: Transport,
    #[serde(rename = "hardbox.network.listener")]
    pub listener: ListenerKind,
    /// `allow` or `deny`.
    #[serde(rename = "hardbox.decision", skip_serializing_if = "Option::is_none")]
    pub decision: Option<&'static str>,
    /// The rule (or default) that decided, as written.
    #[serde(rename = "hardbox.rule", skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The sandbox side of the connection.
    #[serde(rename = "client.address", skip_serializing_if = "Option::is_none")]
    pub client_address: Option<IpAddr>,
    #[serde(rename = "client.port", skip_serializing_if = "Option::is_none")]
    pub client_port: Option<u16>,
    /// The address actually connected to (or refused) upstream.
    #[serde(
        rename = "network.peer.address",
        skip_serializing_if = "Option::is_none"
    )]
    pub peer_address: Option<IpAddr>,
    /// For `hardbox.policy.denied`: `proxy` or `dns`.
    #[serde(
        rename = "hardbox.policy.layer",
        skip_serializing_if = "Option::is_none"
    )]
    pub layer: Option<&'static str>,
    /// For `hardbox.policy.denied`: what was attempted (`CONNECT evil.test:443`).
    #[serde(
        rename = "hardbox.policy.attempted",
        skip_serializing_if = "Option::is_none"
    )]
    pub attempted: Option<String>,
    /// For secret events: the secret's name (never its value).
    #[serde(
        rename = "hardbox.secret.name",
        skip_serializing_if = "Option::is_none"
    )]
    pub secret: Option<String>,
    /// `true` on a `hardbox.policy.denied` for a placeholder sent to another host.
    #[serde(
        rename = "hardbox.secret.exfiltration",
        skip_serializing_if = "is_false"
    )]
    pub exfiltration: bool,
    #[serde(rename = "dns.question.type", skip_serializing_if = "Option::is_none")]
    pub dns_type: Option<String>,
    #[serde(rename = "dns.response_code", skip_serializing_if = "Option::is_none")]
    pub dns_rcode: Option<&'static str>,
    #[serde(rename = "dns.answers", skip_serializing_if = "Vec::is_empty")]
    pub dns_answers: Vec<IpAddr>,
    /// What went wrong, for failures that are not policy decisions (upstream refused, TLS
    /// failure).
    #[serde(rename = "error.type", skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `hardbox.sensor.loss`: how many events were lost.
    #[serde(
        rename = "hardbox.sensor.lost",
        skip_serializing_if = "Option::is_none"
    )]
    pub lost: Option<u64>,
    /// When the event happened, nanoseconds since the Unix epoch.
    #[serde(skip)]
    pub time_unix_nano: u64,
}

/// The sensor name proxy events are recorded under in the event feed.
pub const SENSOR: &str = "proxy";

fn is_false(value: &bool) -> bool {
    !*value
}

impl Event {
    /// An event with only its name, transport and listener set.
    pub fn new(name: EventName, transport: Transport, listener: ListenerKind) -> Self {
        Self {
            name,
            server_address: None,
            server_port: None,
            transport,
            listener,
            decision: None,
            rule: None,
            client_address: None,
            client_port: None,
            peer_address: None,
            layer: None,
            attempted: None,
            secret: None,
            exfiltration: false,
            dns_type: None,
            dns_rcode: None,
            dns_answers: Vec::new(),
            error: None,
            lost: None,
            time_unix_nano: ::events::now_unix_nano(),
        }
    }

    pub(crate) fn server(mut self, address: impl Into<String>, port: Option<u16>) -> Self {
        self.server_address = Some(address.into());
        self.server_port = port;
        self
    }

    pub(crate) fn client(mut self, client: SocketAddr) -> Self {
        self.client_address = Some(client.ip());
        self.client_port = Some(client.port());
        self
    }

    pub(crate) fn decided(mut self, decision: &Decision) -> Self {
        self.decision = Some(decision.verdict.as_str());
        self.rule = Some(decision.decided_by.to_string());
        self
    }

    /// Whether this event records a denial.
    pub fn is_denied(&self) -> bool {
        self.decision == Some(Verdict::Deny.as_str())
    }

    /// The event in the sandbox event feed's model: the same `event.name` and attribute names
    /// (DESIGN.md §5); a loss report carries `hardbox.sensor.name` = [`SENSOR`] and
    /// `hardbox.sensor.lost_count`. Denials, failures and losses are `WARN`, the rest `INFO`.
    pub fn to_feed(&self) -> ::events::Event {
        use ::events::{Event as Feed, Severity};
        let mut feed = Feed::new(self.name.as_str()).at(self.time_unix_nano);
        let mut set = |key: &str, value: ::events::Value| {
            feed.attributes.insert(key.to_owned(), value);
        };
        if self.name == EventName::SensorLoss {
            set(::events::ATTR_SENSOR_NAME, SENSOR.into());
            set(::events::ATTR_LOST_COUNT, self.lost.unwrap_or(0).into());
        } else {
            set("network.transport", self.transport.as_str().into());
            set("hardbox.network.listener", self.listener.as_str().into());
        }
        let strings = [
            ("server.address", self.server_address.clone()),
            ("hardbox.decision", self.decision.map(str::to_owned)),
            ("hardbox.rule", self.rule.clone()),
            ("client.address", self.client_address.map(|a| a.to_string())),
            (
                "network.peer.address",
                self.peer_address.map(|a| a.to_string()),
            ),
            ("hardbox.policy.layer", self.layer.map(str::to_owned)),
            ("hardbox.policy.attempted", self.attempted.clone()),
            ("hardbox.secret.name", self.secret.clone()),
            ("dns.question.type", self.dns_type.clone()),
            ("dns.response_code", self.dns_rcode.map(str::to_owned)),
            ("error.type", self.error.clone()),
        ];
        for (key, value) in strings {
            if let Some(value) = value {
                set(key, value.into());
            }
        }
        for (key, value) in [
            ("server.port", self.server_port),
            ("client.port", self.client_port),
        ] {
            if let Some(port) = value {
                set(key, port.into());
            }
        }
        if self.exfiltration {
            set("hardbox.secret.exfiltration", true.into());
        }
        if !self.dns_answers.is_empty() {
            let answers: Vec<String> = self.dns_answers.iter().map(IpAddr::to_string).collect();
            set("dns.answers", answers.into());
        }
        let warn = self.is_denied()
            || self.error.is_some()
            || matches!(self.name, EventName::PolicyDenied | EventName::SensorLoss);
        if warn {
            feed = feed.severity(Severity::Warn);
        }
        feed
    }
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }
}

impl ListenerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Explicit => "explicit",
            Self::Http => "http",
            Self::Tls => "tls",
            Self::Tcp => "tcp",
            Self::Dns => "dns",
        }
    }
}

/// The sending side, cloned into every task of the engine.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: mpsc::Sender<Event>,
    counters: Arc<LossCounters>,
}

#[derive(Debug, Default)]
struct LossCounters {
    /// Every event lost since the start.
    total: AtomicU64,
    /// Lost events not yet reported by a `hardbox.sensor.loss` event.
    unreported: AtomicU64,
}

/// The receiving side, drained by the caller.
#[derive(Debug)]
pub struct EventReceiver {
    rx: mpsc::Receiver<Event>,
    counters: Arc<LossCounters>,
}

/// A bounded event channel holding at most `capacity` undelivered events (at least 1).
pub fn channel(capacity: usize) -> (EventSender, EventReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let counters = Arc::new(LossCounters::default());
    (
        EventSender {
            tx,
            counters: Arc::clone(&counters),
        },
        EventReceiver { rx, counters },
    )
}

impl EventSender {
    /// Sends without waiting; a full (or closed) channel counts the event as lost.
    pub fn send(&self, event: Event) {
        let unreported = self.counters.unreported.swap(0, Ordering::AcqRel);
        if unreported > 0 {
            let mut loss = Event::new(
                EventName::SensorLoss,
                Transport::Tcp,
                ListenerKind::Explicit,
            );
            loss.lost = Some(unreported);
            if self.tx.try_send(loss).is_err() {
                self.counters
                    .unreported
                    .fetch_add(unreported, Ordering::AcqRel);
            }
        }
        if self.tx.try_send(event).is_err() {
            self.counters.total.fetch_add(1, Ordering::AcqRel);
            self.counters.unreported.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Events lost so far.
    pub fn lost(&self) -> u64 {
        self.counters.total.load(Ordering::Acquire)
    }
}

impl EventReceiver {
    /// The next event; `None` once every sender is gone and the channel is empty.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// The next event, blocking the thread (never call from inside the runtime).
    pub fn blocking_recv(&mut self) -> Option<Event> {
        self.rx.blocking_recv()
    }

    /// Events lost so far because the channel was full.
    pub fn lost(&self) -> u64 {
        self.counters.total.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{DecidedBy, Decision};

    fn connect(host: &str) -> Event {
        Event::new(EventName::NetworkConnect, Transport::Tcp, ListenerKind::Tls)
            .server(host, Some(443))
            .decided(&Decision::deny(DecidedBy::DefaultDeny))
    }

    #[test]
    fn overflow_is_counted_and_reported() {
        let (tx, mut rx) = channel(2);
        for n in 0..5 {
            tx.send(connect(&format!("h{n}.test")));
        }
        assert_eq!(rx.lost(), 3);
        assert_eq!(
            rx.try_recv().unwrap().server_address.as_deref(),
            Some("h0.test")
        );
        assert_eq!(
            rx.try_recv().unwrap().server_address.as_deref(),
            Some("h1.test")
        );
        assert!(rx.try_recv().is_none());
        tx.send(connect("h5.test"));
        let loss = rx.try_recv().unwrap();
        assert_eq!((loss.name, loss.lost), (EventName::SensorLoss, Some(3)));
        assert_eq!(
            rx.try_recv().unwrap().server_address.as_deref(),
            Some("h5.test")
        );
    }

    #[test]
    fn converts_to_the_event_feed_with_the_same_names() {
        let mut event = connect("evil.test").client("127.0.0.1:40000".parse().unwrap());
        event.peer_address = Some("192.0.2.1".parse().unwrap());
        let feed = event.to_feed();
        assert_eq!(feed.name, ::events::NETWORK_CONNECT);
        assert_eq!(feed.severity, ::events::Severity::Warn);
        assert_eq!(feed.time_unix_nano, event.time_unix_nano);
        let json = serde_json::to_value(&feed.attributes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "server.address": "evil.test",
                "server.port": 443,
                "network.transport": "tcp",
                "hardbox.network.listener": "tls",
                "hardbox.decision": "deny",
                "hardbox.rule": "default deny",
                "client.address": "127.0.0.1",
                "client.port": 40000,
                "network.peer.address": "192.0.2.1",
            })
        );
        let mut dns = Event::new(EventName::DnsQuery, Transport::Udp, ListenerKind::Dns)
            .server("api.test", None);
        dns.dns_type = Some("A".into());
        dns.dns_rcode = Some("NOERROR");
        dns.dns_answers = vec!["192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap()];
        let feed = dns.to_feed();
        assert_eq!(feed.severity, ::events::Severity::Info);
        assert_eq!(
            feed.attributes["dns.answers"],
            ::events::Value::StringArray(vec!["192.0.2.1".into(), "192.0.2.2".into()])
        );
        let mut loss = Event::new(
            EventName::SensorLoss,
            Transport::Tcp,
            ListenerKind::Explicit,
        );
        loss.lost = Some(7);
        let feed = loss.to_feed();
        assert_eq!(feed.name, ::events::SENSOR_LOSS);
        assert_eq!(
            feed.attributes[::events::ATTR_LOST_COUNT],
            ::events::Value::Int(7)
        );
        assert_eq!(
            feed.attributes[::events::ATTR_SENSOR_NAME],
            ::events::Value::from(SENSOR)
        );
        assert!(!feed.attributes.contains_key("network.transport"));
    }

    #[test]
    fn serializes_with_semantic_convention_names() {
        let json = serde_json::to_value(connect("evil.test")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "event.name": "hardbox.network.connect",
                "server.address": "evil.test",
                "server.port": 443,
                "network.transport": "tcp",
                "hardbox.network.listener": "tls",
                "hardbox.decision": "deny",
                "hardbox.rule": "default deny",
            })
        );
    }
}
