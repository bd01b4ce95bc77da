//! Fault-injecting TCP proxies between the nodes.
//!
//! The harness places one proxy on every ordered pair of nodes: node `i`'s
//! config lists node `j` at the address of the proxy `i → j`, which forwards
//! to `j`'s real address. Raft RPCs travel on connections the *sender* opens,
//! so the link `i → j` carries exactly what `i` asks of `j` (and the
//! answers): cutting it alone is a one-way partition.
//!
//! A link is [`Link::Up`], [`Link::Down`], [`Link::Delayed`],
//! [`Link::Jittered`] or [`Link::Frozen`]. When a link goes down, its open
//! connections are dropped at once; new connections are either closed right
//! after accept (`refuse`) or accepted and left hanging without a byte
//! forwarded (`blackhole`, which looks like lost packets: the client waits
//! for its own timeout). A delayed link forwards every chunk after the given
//! delay, in order, both ways; a jittered one after a delay drawn per chunk
//! (still in order). A frozen link stalls: open connections stay open but
//! nothing moves, new ones are accepted and wait, and when the link thaws
//! everything queued flows on — a stalled network, not a closed one.
//!
//! The proxies are tokio tasks of the harness process; dropping
//! [`Proxies`] stops them and closes every connection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long the proxy waits to connect to the real target.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes read per chunk.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks queued per direction of a delayed connection before the reader waits.
pub const QUEUE_CHUNKS: usize = 256;

/// The state of one directed link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Forwarding.
    Up,
    /// Cut: existing connections dropped, new ones refused or black-holed.
    Down {
        /// Accept new connections and hold them silently instead of closing them.
        blackhole: bool,
    },
    /// Forwarding with an added one-way delay per chunk.
    Delayed(Duration),
    /// Forwarding with a one-way delay drawn per chunk from `min..=max`,
    /// chunks kept in order.
    Jittered {
        /// The shortest delay.
        min: Duration,
        /// The longest delay.
        max: Duration,
    },
    /// Stalled: nothing is forwarded and nothing is closed until the link changes.
    Frozen,
}

impl Link {
    fn is_down(&self) -> bool {
        matches!(self, Link::Down { .. })
    }

    fn is_frozen(&self) -> bool {
        matches!(self, Link::Frozen)
    }

    /// The delay for a chunk read now.
    fn delay(&self) -> Duration {
        match *self {
            Link::Delayed(delay) => delay,
            Link::Jittered { min, max } if max > min => {
                use rand::Rng as _;
                let spread = (max - min).as_micros() as u64;
                min + Duration::from_micros(rand::thread_rng().gen_range(0..=spread))
            }
            Link::Jittered { min, .. } => min,
            _ => Duration::ZERO,
        }
    }
}

/// One proxy: the link `from → to`.
struct Proxy {
    from: usize,
    to: usize,
    address: SocketAddr,
    state: watch::Sender<Link>,
    task: JoinHandle<()>,
}

/// Where the proxies listen in a run on loopback.
pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The proxies of every ordered pair of nodes.
pub struct Proxies {
    proxies: Vec<Proxy>,
}

impl Proxies {
    /// Binds one proxy per ordered pair `(i, j)`, `i != j`, on `bind` (an
    /// address the nodes reach: loopback, or the client host's address on
    /// the LAN of `--netns`), forwarding to `targets[j]`. Every link starts up.
    pub async fn start(bind: IpAddr, targets: &[SocketAddr]) -> anyhow::Result<Proxies> {
        let mut proxies = Vec::new();
        for from in 0..targets.len() {
            for (to, target) in targets.iter().enumerate() {
                if from == to {
                    continue;
                }
                let listener = TcpListener::bind((bind, 0)).await?;
                let address = listener.local_addr()?;
                let (state, watch) = watch::channel(Link::Up);
                let task = tokio::spawn(accept_loop(listener, *target, watch));
                proxies.push(Proxy {
                    from,
                    to,
                    address,
                    state,
                    task,
                });
            }
        }
        Ok(Proxies { proxies })
    }

    /// The address node `from` uses to reach node `to` (0-based).
    pub fn address(&self, from: usize, to: usize) -> Option<SocketAddr> {
        self.find(from, to).map(|p| p.address)
    }

    fn find(&self, from: usize, to: usize) -> Option<&Proxy> {
        self.proxies.iter().find(|p| p.from == from && p.to == to)
    }

    /// Sets the link `from → to`.
    pub fn set(&self, from: usize, to: usize, link: Link) {
        if let Some(proxy) = self.find(from, to) {
            proxy.state.send_replace(link);
        }
    }

    /// Sets both directions between `a` and `b`.
    pub fn set_both(&self, a: usize, b: usize, link: Link) {
        self.set(a, b, link);
        self.set(b, a, link);
    }

    /// Sets every link.
    pub fn set_all(&self, link: Link) {
        for proxy in &self.proxies {
            proxy.state.send_replace(link);
        }
    }

    /// Every link up.
    pub fn heal(&self) {
        self.set_all(Link::Up);
    }

    /// The links that are not up, described (`n1→n2 down`), for logs.
    pub fn describe(&self) -> Vec<String> {
        self.proxies
            .iter()
            .filter_map(|p| {
                let link = *p.state.borrow();
                (link != Link::Up).then(|| format!("n{}→n{} {link:?}", p.from + 1, p.to + 1))
            })
            .collect()
    }
}

/// One proxy to one target, with its link state: an application's whole link
/// to the cluster (it dials the access point only through this).
pub struct LinkProxy {
    /// Where to dial instead of the target.
    pub address: SocketAddr,
    state: watch::Sender<Link>,
    task: JoinHandle<()>,
}

impl LinkProxy {
    /// Binds on `127.0.0.1`, forwarding to `target`; the link starts up.
    pub async fn start(target: SocketAddr) -> anyhow::Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (state, watch) = watch::channel(Link::Up);
        let task = tokio::spawn(accept_loop(listener, target, watch));
        Ok(LinkProxy {
            address,
            state,
            task,
        })
    }

    /// Sets the link.
    pub fn set(&self, link: Link) {
        self.state.send_replace(link);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        for proxy in &self.proxies {
            proxy.task.abort();
        }
    }
}

/// Accepts connections and serves each by the link's current state.
async fn accept_loop(listener: TcpListener, target: SocketAddr, state: watch::Receiver<Link>) {
    // Connection tasks are aborted with the accept loop (they are in this set).
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let _ = client.set_nodelay(true);
                let state = state.clone();
                connections.spawn(serve(client, target, state));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Serves one accepted connection until either side closes or the link goes down.
async fn serve(client: TcpStream, target: SocketAddr, mut state: watch::Receiver<Link>) {
    // A connection accepted while the link is frozen waits for the thaw.
    if state.borrow_and_update().is_frozen() && state.wait_for(|l| !l.is_frozen()).await.is_err() {
        return;
    }
    let link = *state.borrow_and_update();
    if let Link::Down { blackhole } = link {
        if blackhole {
            // Hold the connection without a byte until the link changes, then close it.
            let _ = state.changed().await;
        }
        return;
    }
    let server = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await {
        Ok(Ok(server)) => server,
        _ => return,
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let (up, down) = (state.clone(), state.clone());
    let forward = async move {
        tokio::join!(
            pump(client_read, server_write, up),
            pump(server_read, client_write, down)
        )
    };
    tokio::select! {
        _ = forward => {}
        _ = state.wait_for(Link::is_down) => {}
    }
    // Dropping both halves of both sockets closes the connection.
}

/// Copies one direction, delaying each chunk by the link's delay at the time
/// it was read (never before the chunk ahead of it), and holding every chunk
/// while the link is frozen.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: watch::Receiver<Link>,
) {
    let (queue, mut chunks) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE_CHUNKS);
    let mut frozen = state.clone();
    let reader = async move {
        let mut buffer = vec![0u8; CHUNK_BYTES];
        let mut last_due = Instant::now();
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let delay = state.borrow().delay();
            last_due = last_due.max(Instant::now() + delay);
            if queue.send((last_due, buffer[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some((due, chunk)) = chunks.recv().await {
            tokio::time::sleep_until(due).await;
            if frozen.borrow_and_update().is_frozen()
                && frozen.wait_for(|l| !l.is_frozen()).await.is_err()
            {
                break;
            }
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = socket.read(&mut buffer).await {
                        if n == 0 || socket.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        address
    }

    async fn round_trip(address: SocketAddr) -> Option<Duration> {
        let started = Instant::now();
        let attempt = async {
            let mut socket = TcpStream::connect(address).await.ok()?;
            socket.write_all(b"ping").await.ok()?;
            let mut buffer = [0u8; 4];
            socket.read_exact(&mut buffer).await.ok()?;
            (&buffer == b"ping").then_some(())
        };
        tokio::time::timeout(Duration::from_millis(500), attempt)
            .await
            .ok()??;
        Some(started.elapsed())
    }

    // A link forwards when up, refuses or black-holes when down, drops open
    // connections when cut, and adds its delay when delayed.
    #[tokio::test]
    async fn links_forward_cut_and_delay() {
        let targets = [echo_server().await, echo_server().await];
        let proxies = Proxies::start(LOOPBACK, &targets).await.unwrap();
        let a_to_b = proxies.address(0, 1).unwrap();
        assert!(round_trip(a_to_b).await.is_some());

        // An open connection is dropped when the link goes down.
        let mut open = TcpStream::connect(a_to_b).await.unwrap();
        open.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        open.read_exact(&mut one).await.unwrap();
        proxies.set(0, 1, Link::Down { blackhole: false });
        let read = tokio::time::timeout(Duration::from_secs(1), open.read(&mut one)).await;
        assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
        assert!(round_trip(a_to_b).await.is_none());
        // The other direction is untouched.
        assert!(round_trip(proxies.address(1, 0).unwrap()).await.is_some());

        proxies.set(0, 1, Link::Down { blackhole: true });
        assert!(round_trip(a_to_b).await.is_none());

        proxies.set(0, 1, Link::Delayed(Duration::from_millis(100)));
        let took = round_trip(a_to_b).await.unwrap();
        assert!(took >= Duration::from_millis(200), "{took:?}");

        proxies.set(
            0,
            1,
            Link::Jittered {
                min: Duration::from_millis(20),
                max: Duration::from_millis(60),
            },
        );
        let took = round_trip(a_to_b).await.unwrap();
        assert!(took >= Duration::from_millis(40), "{took:?}");

        proxies.heal();
        assert!(round_trip(a_to_b).await.is_some());
        assert!(proxies.describe().is_empty());
    }

    // A frozen link stalls an open connection without closing it, and new
    // connections wait; after the thaw both carry on with nothing lost.
    #[tokio::test]
    async fn a_frozen_link_stalls_and_thaws() {
        let targets = [echo_server().await, echo_server().await];
        let proxies = Proxies::start(LOOPBACK, &targets).await.unwrap();
        let a_to_b = proxies.address(0, 1).unwrap();
        let mut open = TcpStream::connect(a_to_b).await.unwrap();
        open.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        open.read_exact(&mut one).await.unwrap();

        proxies.set(0, 1, Link::Frozen);
        open.write_all(b"y").await.unwrap();
        let stalled = tokio::time::timeout(Duration::from_millis(300), open.read(&mut one)).await;
        assert!(
            stalled.is_err(),
            "a frozen link forwarded or closed: {stalled:?}"
        );
        assert!(
            round_trip(a_to_b).await.is_none(),
            "a new connection got through"
        );
        let waiting = tokio::spawn(async move {
            let mut socket = TcpStream::connect(a_to_b).await.unwrap();
            socket.write_all(b"z").await.unwrap();
            let mut one = [0u8; 1];
            socket.read_exact(&mut one).await.unwrap();
            one
        });
        tokio::time::sleep(Duration::from_millis(100)).await;

        proxies.heal();
        let read = tokio::time::timeout(Duration::from_secs(1), open.read_exact(&mut one)).await;
        assert!(matches!(read, Ok(Ok(_))), "{read:?}");
        assert_eq!(&one, b"y");
        let answered = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert_eq!(answered.unwrap().unwrap(), *b"z");
    }
}
