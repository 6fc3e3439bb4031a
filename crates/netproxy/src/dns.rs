//! The sandbox's DNS responder: answers A and AAAA questions for allowed names with the
//! addresses the caller's resolver gives (minus any the policy refuses, so a rebinding answer
//! never reaches the sandbox), NXDOMAIN for denied names, an empty answer for other types of
//! allowed names and NOTIMP for other opcodes and classes. Every question becomes an event;
//! malformed packets are dropped and counted.
//!
//! The message format is small enough to handle here: one question, names with compression
//! pointers followed (bounded), answers pointing back at the question's name. UDP answers are
//! truncated (TC) to 512 bytes, or the EDNS payload size the query offers (at most 1232);
//! TCP (two-byte length prefix) carries up to 64 KiB.
//!
//! The addresses given out are remembered ([`DnsMap`]) so that a plain TCP connection to one of
//! them can be matched against `allow-tcp NAME:PORT` rules.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::engine::Shared;
use crate::events::{Event, EventName, ListenerKind, Transport};
use crate::policy::{DecidedBy, Decision, Target};

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;

/// A response code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    ServFail = 2,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

impl Rcode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoError => "NOERROR",
            Self::FormErr => "FORMERR",
            Self::ServFail => "SERVFAIL",
            Self::NxDomain => "NXDOMAIN",
            Self::NotImp => "NOTIMP",
            Self::Refused => "REFUSED",
        }
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("dns packet shorter than its header")]
    Short,
    #[error("dns packet is a response, not a query")]
    Response,
    #[error("dns query without exactly one question")]
    QuestionCount,
    #[error("dns name runs past the end of the packet")]
    Truncated,
    #[error("dns name has a compression loop or is longer than 255 bytes")]
    BadName,
}

/// A parsed query: its header fields and its one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub opcode: u8,
    pub recursion_desired: bool,
    /// The labels as sent (bytes, case kept).
    pub labels: Vec<Vec<u8>>,
    pub qtype: u16,
    pub qclass: u16,
    /// The UDP payload size of an EDNS OPT record, if the query has one.
    pub edns_size: Option<u16>,
}

impl Query {
    /// The question's name, lowercase and dotted, when every label is a plain host-name label.
    pub fn name(&self) -> Option<String> {
        let mut name = String::new();
        for label in &self.labels {
            if label.is_empty()
                || !label
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            {
                return None;
            }
            if !name.is_empty() {
                name.push('.');
            }
            name.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        }
        Some(name)
    }

    /// The name for events: dotted, with unusual bytes escaped.
    fn display_name(&self) -> String {
        if self.labels.is_empty() {
            return ".".into();
        }
        let mut name = String::new();
        for (index, label) in self.labels.iter().enumerate() {
            if index > 0 {
                name.push('.');
            }
            name.extend(
                label
                    .iter()
                    .flat_map(|b| std::ascii::escape_default(*b))
                    .map(char::from),
            );
        }
        name
    }
}

/// The name of a record type for events (`A`, `AAAA`, ... or the number).
pub fn type_name(qtype: u16) -> String {
    match qtype {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        64 => "SVCB".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        other => other.to_string(),
    }
}

fn read_u16(packet: &[u8], at: usize) -> Result<u16, Malformed> {
    match packet.get(at..at + 2) {
        Some([a, b]) => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(Malformed::Truncated),
    }
}

/// Reads a name at `at`; returns its labels and the offset just past it (in the original
/// position, not after a pointer's target).
fn read_name(packet: &[u8], mut at: usize) -> Result<(Vec<Vec<u8>>, usize), Malformed> {
    let mut labels = Vec::new();
    let mut end = None;
    let mut total = 0usize;
    let mut jumps = 0;
    loop {
        let len = *packet.get(at).ok_or(Malformed::Truncated)?;
        match len & 0xC0 {
            0x00 => {
                if len == 0 {
                    return Ok((labels, end.unwrap_or(at + 1)));
                }
                let label = packet
                    .get(at + 1..at + 1 + usize::from(len))
                    .ok_or(Malformed::Truncated)?;
                total += usize::from(len) + 1;
                if total > 255 {
                    return Err(Malformed::BadName);
                }
                labels.push(label.to_vec());
                at += 1 + usize::from(len);
            }
            0xC0 => {
                let pointer = usize::from(read_u16(packet, at)? & 0x3FFF);
                end.get_or_insert(at + 2);
                jumps += 1;
                if jumps > 16 || pointer >= packet.len() {
                    return Err(Malformed::BadName);
                }
                at = pointer;
            }
            _ => return Err(Malformed::BadName),
        }
    }
}

/// Parses a query packet.
pub fn parse_query(packet: &[u8]) -> Result<Query, Malformed> {
    if packet.len() < 12 {
        return Err(Malformed::Short);
    }
    let id = read_u16(packet, 0)?;
    let flags = read_u16(packet, 2)?;
    if flags & 0x8000 != 0 {
        return Err(Malformed::Response);
    }
    if read_u16(packet, 4)? != 1 {
        return Err(Malformed::QuestionCount);
    }
    let (ancount, nscount, arcount) = (
        read_u16(packet, 6)?,
        read_u16(packet, 8)?,
        read_u16(packet, 10)?,
    );
    let (labels, after_name) = read_name(packet, 12)?;
    let qtype = read_u16(packet, after_name)?;
    let qclass = read_u16(packet, after_name + 2)?;
    let mut edns_size = None;
    if ancount == 0 && nscount == 0 && arcount > 0 {
        // An OPT pseudo-record: root name, type 41, class = UDP payload size.
        let (opt_name, after) = read_name(packet, after_name + 4)?;
        if opt_name.is_empty() && read_u16(packet, after)? == TYPE_OPT {
            edns_size = Some(read_u16(packet, after + 2)?);
        }
    }
    Ok(Query {
        id,
        opcode: ((flags >> 11) & 0x0F) as u8,
        recursion_desired: flags & 0x0100 != 0,
        labels,
        qtype,
        qclass,
        edns_size,
    })
}

/// Builds a response to `query`: `answers` become A/AAAA records (those of the wrong family are
/// skipped) until `max_len` would be exceeded, then TC is set.
pub fn build_response(
    query: &Query,
    rcode: Rcode,
    answers: &[IpAddr],
    ttl: u32,
    max_len: usize,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query.id.to_be_bytes());
    let mut flags: u16 = 0x8000 | (u16::from(query.opcode) << 11) | 0x0080 | rcode as u16;
    if query.recursion_desired {
        flags |= 0x0100;
    }
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in &query.labels {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out.extend_from_slice(&query.qtype.to_be_bytes());
    out.extend_from_slice(&query.qclass.to_be_bytes());
    let mut count: u16 = 0;
    for ip in answers {
        let (rtype, data): (u16, Vec<u8>) = match ip {
            IpAddr::V4(v4) if query.qtype == TYPE_A => (TYPE_A, v4.octets().to_vec()),
            IpAddr::V6(v6) if query.qtype == TYPE_AAAA => (TYPE_AAAA, v6.octets().to_vec()),
            _ => continue,
        };
        if out.len() + 12 + data.len() > max_len {
            out[2] |= 0x02; // TC
            break;
        }
        out.extend_from_slice(&[0xC0, 0x0C]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
        count += 1;
    }
    out[6..8].copy_from_slice(&count.to_be_bytes());
    out
}

/// Addresses the responder gave out, and for which names: lets a plain TCP connection to an
/// address be matched against `allow-tcp NAME:PORT`. Bounded; the oldest addresses go first.
#[derive(Debug, Default)]
pub struct DnsMap {
    inner: Mutex<DnsMapInner>,
}

#[derive(Debug, Default)]
struct DnsMapInner {
    names: HashMap<IpAddr, Vec<String>>,
    order: VecDeque<IpAddr>,
}

const DNS_MAP_ADDRESSES: usize = 8192;
const DNS_MAP_NAMES_PER_ADDRESS: usize = 16;

impl DnsMap {
    pub fn record(&self, name: &str, addrs: &[IpAddr]) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        for ip in addrs {
            let names = match inner.names.get_mut(ip) {
                Some(names) => names,
                None => {
                    inner.order.push_back(*ip);
                    if inner.order.len() > DNS_MAP_ADDRESSES {
                        if let Some(old) = inner.order.pop_front() {
                            inner.names.remove(&old);
                        }
                    }
                    inner.names.entry(*ip).or_default()
                }
            };
            if !names.iter().any(|known| known == name) {
                if names.len() == DNS_MAP_NAMES_PER_ADDRESS {
                    names.remove(0);
                }
                names.push(name.to_owned());
            }
        }
    }

    /// The names the responder answered with `ip`, oldest first.
    pub fn names(&self, ip: IpAddr) -> Vec<String> {
        self.inner
            .lock()
            .ok()
            .and_then(|inner| inner.names.get(&ip).cloned())
            .unwrap_or_default()
    }
}

/// Decides and answers one query; returns the response and its events.
pub(crate) async fn answer(
    shared: &Shared,
    query: &Query,
    transport: Transport,
    client: SocketAddr,
    max_len: usize,
) -> Vec<u8> {
    shared.stats.dns_queries.fetch_add(1, Ordering::Relaxed);
    let display = query.display_name();
    let mut event = Event::new(EventName::DnsQuery, transport, ListenerKind::Dns)
        .server(display.clone(), None)
        .client(client);
    event.dns_type = Some(type_name(query.qtype));
    let ttl = shared.config.dns_ttl;

    let (rcode, answers, decision) = if query.opcode != 0 || query.qclass != CLASS_IN {
        (Rcode::NotImp, Vec::new(), None)
    } else {
        let decision = match query.name().map(|name| Target::parse(&name)) {
            Some(Ok(Target::Name(name))) => (Some(name.clone()), shared.policy.decide_dns(&name)),
            _ => (None, Decision::deny(DecidedBy::DefaultDeny)),
        };
        match decision {
            (Some(name), decision) if decision.is_allowed() => {
                if query.qtype == TYPE_A || query.qtype == TYPE_AAAA {
                    resolve_answer(shared, &name, query.qtype, decision).await
                } else {
                    (Rcode::NoError, Vec::new(), Some(decision))
                }
            }
            (_, decision) => (Rcode::NxDomain, Vec::new(), Some(decision)),
        }
    };

    let response = build_response(query, rcode, &answers, ttl, max_len);
    event.dns_rcode = Some(rcode.as_str());
    event.dns_answers = answers;
    if let Some(decision) = &decision {
        event = event.decided(decision);
        if !decision.is_allowed() {
            shared.stats.denied.fetch_add(1, Ordering::Relaxed);
            let mut denied = event.clone();
            denied.name = EventName::PolicyDenied;
            denied.layer = Some("dns");
            denied.attempted = Some(format!("dns {} {display}", type_name(query.qtype)));
            shared.events.send(event);
            shared.events.send(denied);
            return response;
        }
    }
    shared.events.send(event);
    response
}

async fn resolve_answer(
    shared: &Shared,
    name: &str,
    qtype: u16,
    decision: Decision,
) -> (Rcode, Vec<IpAddr>, Option<Decision>) {
    let addrs = match shared.resolver.resolve(name).await {
        Ok(addrs) => addrs,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return (Rcode::NxDomain, Vec::new(), Some(decision))
        }
        Err(_) => return (Rcode::ServFail, Vec::new(), Some(decision)),
    };
    let mut refusal = None;
    let family: Vec<IpAddr> = addrs
        .into_iter()
        .filter(|ip| (qtype == TYPE_A) == ip.is_ipv4())
        .filter(|ip| match shared.policy.check_dns_address(*ip) {
            Some(refused) => {
                refusal.get_or_insert(refused);
                false
            }
            None => true,
        })
        .collect();
    if family.is_empty() {
        if let Some(refused) = refusal {
            // Every address of an allowed name is refused (rebinding to a private address).
            return (Rcode::NoError, Vec::new(), Some(refused));
        }
    }
    shared.dns_map.record(name, &family);
    (Rcode::NoError, family, Some(decision))
}

/// Serves DNS over UDP on `socket` until the task is dropped.
pub(crate) async fn serve_udp(shared: Arc<Shared>, socket: UdpSocket) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(_) => continue,
        };
        let query = match parse_query(&buf[..len]) {
            Ok(query) => query,
            Err(_) => {
                shared.stats.dns_malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let socket = Arc::clone(&socket);
        tokio::spawn(async move {
            let max_len = query
                .edns_size
                .map_or(512, |size| usize::from(size).clamp(512, 1232));
            let response = answer(&shared, &query, Transport::Udp, client, max_len).await;
            let _ = socket.send_to(&response, client).await;
        });
    }
}

/// Serves DNS over one TCP connection (queries one after another).
pub(crate) async fn serve_tcp_connection(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    client: SocketAddr,
) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut packet = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut packet).await.is_err() {
            return;
        }
        let Ok(query) = parse_query(&packet) else {
            shared.stats.dns_malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let response = answer(
            &shared,
            &query,
            Transport::Tcp,
            client,
            usize::from(u16::MAX),
        )
        .await;
        let mut framed = Vec::with_capacity(response.len() + 2);
        framed.extend_from_slice(&(response.len() as u16).to_be_bytes());
        framed.extend_from_slice(&response);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_packet(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut packet = id.to_be_bytes().to_vec();
        packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            packet.push(label.len() as u8);
            packet.extend_from_slice(label.as_bytes());
        }
        packet.push(0);
        packet.extend_from_slice(&qtype.to_be_bytes());
        packet.extend_from_slice(&CLASS_IN.to_be_bytes());
        packet
    }

    #[test]
    fn parses_and_answers() {
        let query = parse_query(&query_packet(0x1234, "Api.Example.com", TYPE_A)).unwrap();
        assert_eq!(query.name().as_deref(), Some("api.example.com"));
        assert_eq!(
            (query.id, query.qtype, query.edns_size),
            (0x1234, TYPE_A, None)
        );
        let ips: Vec<IpAddr> = vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()];
        let response = build_response(&query, Rcode::NoError, &ips, 60, 512);
        assert_eq!(&response[..2], &[0x12, 0x34]);
        assert_eq!(response[3] & 0x0F, 0);
        assert_eq!(&response[6..8], &[0, 1]); // only the A record
        assert_eq!(&response[response.len() - 4..], &[192, 0, 2, 1]);
    }

    #[test]
    fn truncates_to_the_limit() {
        let query = parse_query(&query_packet(1, "a.test", TYPE_A)).unwrap();
        let ips: Vec<IpAddr> = (0..100u8).map(|n| IpAddr::from([192, 0, 2, n])).collect();
        let response = build_response(&query, Rcode::NoError, &ips, 60, 512);
        assert!(response.len() <= 512);
        assert_eq!(response[2] & 0x02, 0x02);
    }

    #[test]
    fn malformed_packets_are_refused() {
        assert_eq!(parse_query(&[0; 5]), Err(Malformed::Short));
        let mut response = query_packet(1, "a.test", TYPE_A);
        response[2] |= 0x80;
        assert_eq!(parse_query(&response), Err(Malformed::Response));
        let mut truncated = query_packet(1, "a.test", TYPE_A);
        truncated.truncate(16);
        assert_eq!(parse_query(&truncated), Err(Malformed::Truncated));
        // A name pointing at itself.
        let mut looped = query_packet(1, "a", TYPE_A);
        looped.truncate(12);
        looped.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(parse_query(&looped), Err(Malformed::BadName));
        let mut none = query_packet(1, "a.test", TYPE_A);
        none[5] = 0;
        assert_eq!(parse_query(&none), Err(Malformed::QuestionCount));
    }

    #[test]
    fn reads_edns_payload_size() {
        let mut packet = query_packet(7, "a.test", TYPE_AAAA);
        packet[11] = 1;
        packet.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_query(&packet).unwrap().edns_size, Some(1232));
    }

    #[test]
    fn odd_names_have_no_host_name() {
        let mut packet = query_packet(1, "a.test", TYPE_A);
        packet[13] = b'.';
        let query = parse_query(&packet).unwrap();
        assert_eq!(query.name(), None);
        assert_eq!(query.display_name(), "..test");
    }

    #[test]
    fn dns_map_is_bounded_per_address() {
        let map = DnsMap::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for n in 0..20 {
            map.record(&format!("h{n}.test"), &[ip]);
        }
        let names = map.names(ip);
        assert_eq!(names.len(), DNS_MAP_NAMES_PER_ADDRESS);
        assert_eq!(names.last().map(String::as_str), Some("h19.test"));
    }
}
