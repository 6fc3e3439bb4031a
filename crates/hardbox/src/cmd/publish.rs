//! `run -p [IP:]HOSTPORT:PORT`: a port of the sandbox published on the host, on its loopback
//! unless another address is named. The host side listens before the sandbox starts (so a port
//! in use fails the launch early); each connection is forwarded by a thread that entered the
//! sandbox's network namespace, so the sandbox sees it come from its own loopback.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;

use anyhow::{Context, Result};

/// One `-p` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub host: SocketAddr,
    pub sandbox_port: u16,
}

/// Parses `[IP:]HOSTPORT:PORT` (an IPv6 address in brackets).
pub fn parse(text: &str) -> Result<Publish> {
    let invalid = || format!("invalid --publish {text:?}: expected [IP:]HOSTPORT:PORT");
    let (rest, sandbox_port) = text.rsplit_once(':').with_context(invalid)?;
    let sandbox_port: u16 = sandbox_port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .with_context(invalid)?;
    let (ip, host_port) = match rest.rsplit_once(':') {
        Some((ip, port)) => {
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            (ip.parse::<IpAddr>().ok().with_context(invalid)?, port)
        }
        None => (IpAddr::V4(Ipv4Addr::LOCALHOST), rest),
    };
    let host_port: u16 = host_port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .with_context(invalid)?;
    Ok(Publish {
        host: SocketAddr::new(ip, host_port),
        sandbox_port,
    })
}

/// The host-side listeners, bound now.
#[derive(Debug)]
pub struct Publisher {
    listeners: Vec<(TcpListener, u16)>,
}

impl Publisher {
    pub fn bind(publishes: &[Publish]) -> Result<Publisher> {
        let mut listeners = Vec::new();
        for publish in publishes {
            let listener = TcpListener::bind(publish.host)
                .with_context(|| format!("failed to listen on {} for -p", publish.host))?;
            listeners.push((listener, publish.sandbox_port));
        }
        Ok(Publisher { listeners })
    }

    /// Starts forwarding into the network namespace of `init`.
    pub fn start(&mut self, init: u32) -> Result<()> {
        for (listener, port) in self.listeners.drain(..) {
            let namespace = std::fs::File::open(format!("/proc/{init}/ns/net"))
                .context("failed to open the sandbox's network namespace")?;
            std::thread::Builder::new()
                .name(format!("hardbox-publish-{port}"))
                .spawn(move || {
                    // Sockets this thread creates from now on live in the sandbox's namespace;
                    // the listener, made before, stays on the host's.
                    if rustix::thread::move_into_link_name_space(
                        namespace.as_fd(),
                        Some(rustix::thread::LinkNameSpaceType::Network),
                    )
                    .is_err()
                    {
                        return;
                    }
                    for client in listener.incoming() {
                        let Ok(client) = client else { continue };
                        match TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
                            Ok(server) => forward(client, server),
                            // Nothing listens in the sandbox (yet): the client sees a close.
                            Err(_) => drop(client),
                        }
                    }
                })
                .context("failed to start a -p thread")?;
        }
        Ok(())
    }
}

/// Copies both ways on two threads until each side ends.
fn forward(client: TcpStream, server: TcpStream) {
    let pair = client
        .try_clone()
        .and_then(|c| server.try_clone().map(|s| (c, s)));
    let Ok((client_reader, server_writer)) = pair else {
        return;
    };
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(Shutdown::Write);
        }
    };
    let _ = std::thread::Builder::new().spawn(copy(client_reader, server_writer));
    let _ = std::thread::Builder::new().spawn(copy(server, client));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_flags_default_to_the_hosts_loopback() {
        assert_eq!(
            parse("8080:80").unwrap(),
            Publish {
                host: "127.0.0.1:8080".parse().unwrap(),
                sandbox_port: 80
            }
        );
        assert_eq!(
            parse("0.0.0.0:8080:80").unwrap().host,
            "0.0.0.0:8080".parse().unwrap()
        );
        assert_eq!(
            parse("[::1]:8080:80").unwrap().host,
            "[::1]:8080".parse().unwrap()
        );
        for bad in ["80", "x:80", "8080:0", "1.2.3:8080:80", "8080:70000"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
