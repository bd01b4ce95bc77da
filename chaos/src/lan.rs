//! A LAN in a box: network namespaces for three node hosts and a client
//! host, joined by veth pairs to a bridge in a namespace of its own, on the
//! documentation range 198.51.100.0/24, and a sampler of who holds the
//! access point's address there.
//!
//! Nothing touches the machine's own network: no interface of it joins the
//! bridge and no namespace has a default route, so no packet can leave.
//! Every namespace is deleted when the [`Lan`] drops, also when a run or a
//! test fails; namespaces left by a process that was killed (`SIGKILL`
//! cannot be caught) are deleted by the next [`Lan::build`], whose names carry
//! the pid of the process that made them.
//!
//! Used by `raftlm-chaos --netns` and by the network-namespace tests in
//! `chaos/tests/netns.rs`: one module, so both sample the LAN the same way.
//! It needs only `std` and `libc`.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The access point's address on the LAN.
pub const VIP: &str = "198.51.100.100";
/// The LAN's prefix length.
pub const PREFIX: u8 = 24;
/// The client port of every node and of the access point.
pub const PORT: u16 = 27000;
/// The peer port of every node.
pub const PEER_PORT: u16 = 27100;
/// The client host's address.
pub const CLIENT_IP: &str = "198.51.100.200";
/// The node hosts' interface on the LAN.
pub const INTERFACE: &str = "eth0";
/// Where `ip netns add` puts a namespace's handle.
const NETNS_DIR: &str = "/run/netns";
/// Every namespace a [`Lan`] makes is named `rlm{pid}x…`.
const PREFIX_NAME: &str = "rlm";

/// Why namespaces cannot be made here, if they cannot: not root, no `ip`
/// or `arping`, or a container that forbids them.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: network namespaces need CAP_SYS_ADMIN".into());
    }
    for tool in ["ip", "arping"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!(
                "`{tool}` is not installed (apt-get install iproute2 iputils-arping)"
            ));
        }
    }
    let probe = format!("{PREFIX_NAME}{}probe", std::process::id());
    let made = match Command::new("ip").args(["netns", "add", &probe]).output() {
        Ok(output) => output,
        Err(error) => return Some(format!("cannot run `ip`: {error}")),
    };
    if !made.status.success() {
        return Some(format!(
            "cannot create a network namespace: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        ));
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    None
}

/// Runs `ip` with `args`; an error carries its stderr.
pub fn try_ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Runs `ip` with `args`, panicking with its stderr if it fails.
pub fn ip(args: &[&str]) {
    if let Err(error) = try_ip(args) {
        panic!("{error}");
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Host `id`'s own address (hosts are 1-based).
pub fn host_ip(id: usize) -> String {
    format!("198.51.100.{}", 10 + id)
}

/// Moves the calling thread into the namespace behind `fd`. Sockets the
/// thread opens afterwards, and threads and processes it starts, are there.
pub fn enter(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: setns on a descriptor we hold open changes only this thread's
    // network namespace.
    if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The namespaces of one LAN; deleted on drop.
#[derive(Debug)]
pub struct Lan {
    /// The bridge's namespace.
    pub bridge: String,
    /// The node hosts' namespaces, h1 to h3.
    pub hosts: Vec<String>,
    /// The client host's namespace.
    pub client: String,
    /// Whether each host's link is up (cut with [`Lan::link`]).
    pub links: Arc<Vec<AtomicBool>>,
    /// Each host's MAC address, to read the client's neighbour table.
    pub macs: Vec<String>,
    /// Open handles of the hosts' namespaces, for `setns`.
    host_files: Vec<File>,
    /// Open handle of the client's namespace.
    client_file: Option<File>,
    /// Every namespace made so far, deleted on drop.
    made: Vec<String>,
}

impl Lan {
    /// Builds the LAN, panicking if it cannot (for tests).
    pub fn for_test() -> Lan {
        Lan::build().unwrap_or_else(|error| panic!("cannot build the LAN: {error}"))
    }

    /// Builds the LAN; names carry the pid and a counter, so parallel tests
    /// and runs do not collide. Half-built namespaces are deleted on error.
    pub fn build() -> Result<Lan, String> {
        static RUNS: AtomicU64 = AtomicU64::new(0);
        remove_orphans();
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX_NAME}{}x{run}", std::process::id());
        let mut lan = Lan {
            bridge: format!("{base}br"),
            hosts: (1..=3).map(|i| format!("{base}h{i}")).collect(),
            client: format!("{base}c1"),
            links: Arc::new((0..3).map(|_| AtomicBool::new(true)).collect()),
            macs: Vec::new(),
            host_files: Vec::new(),
            client_file: None,
            made: Vec::new(),
        };
        let bridge = lan.bridge.clone();
        lan.add_namespace(&bridge)?;
        try_ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        try_ip(&["-n", &bridge, "link", "set", "br0", "up"])?;
        let mut members: Vec<(String, String, String)> = lan
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.clone(), format!("h{}", i + 1), host_ip(i + 1)))
            .collect();
        members.push((lan.client.clone(), "c1".into(), CLIENT_IP.into()));
        for (ns, port, address) in &members {
            lan.add_namespace(ns)?;
            try_ip(&["-n", ns, "link", "set", "lo", "up"])?;
            try_ip(&[
                "-n", ns, "link", "add", INTERFACE, "type", "veth", "peer", "name", port, "netns",
                &bridge,
            ])?;
            try_ip(&["-n", &bridge, "link", "set", port, "master", "br0"])?;
            try_ip(&["-n", &bridge, "link", "set", port, "up"])?;
            let cidr = format!("{address}/{PREFIX}");
            try_ip(&["-n", ns, "addr", "add", &cidr, "dev", INTERFACE])?;
            try_ip(&["-n", ns, "link", "set", INTERFACE, "up"])?;
        }
        for host in &lan.hosts {
            let text = ip_output(&["-n", host, "-o", "link", "show", INTERFACE]);
            let mac = text
                .split_whitespace()
                .skip_while(|w| *w != "link/ether")
                .nth(1)
                .unwrap_or_default()
                .to_string();
            lan.macs.push(mac);
        }
        let open = |ns: &str| {
            File::open(Path::new(NETNS_DIR).join(ns)).map_err(|e| format!("cannot open {ns}: {e}"))
        };
        lan.host_files = lan
            .hosts
            .iter()
            .map(|h| open(h))
            .collect::<Result<_, _>>()?;
        lan.client_file = Some(open(&lan.client)?);
        Ok(lan)
    }

    fn add_namespace(&mut self, ns: &str) -> Result<(), String> {
        try_ip(&["netns", "add", ns])?;
        // Recorded once it exists, so drop deletes exactly what was made.
        self.made.push(ns.to_string());
        Ok(())
    }

    /// Cuts (`up = false`) or restores host `id`'s link on its own side.
    pub fn link(&self, id: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        // Recorded first when cutting, last when restoring: the sampler never
        // counts a cut-off host as answering.
        if !up {
            self.links[id - 1].store(false, Ordering::SeqCst);
        }
        ip(&["-n", &self.hosts[id - 1], "link", "set", INTERFACE, state]);
        if up {
            self.links[id - 1].store(true, Ordering::SeqCst);
        }
    }

    /// Whether host `id`'s link is up.
    pub fn link_up(&self, id: usize) -> bool {
        self.links[id - 1].load(Ordering::SeqCst)
    }

    /// The namespace handle of host `id`, for [`enter`].
    pub fn host_fd(&self, id: usize) -> RawFd {
        self.host_files[id - 1].as_raw_fd()
    }

    /// The namespace handle of the client host, for [`enter`].
    pub fn client_fd(&self) -> RawFd {
        self.client_file.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    }

    /// `program` run in namespace `ns` (`ip netns exec`, which execs it:
    /// the child's pid is the program's).
    pub fn command_in(ns: &str, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]).arg(program);
        command
    }

    /// `program` run in host `id`'s namespace: the child enters it between
    /// fork and exec, so its pid is the program's.
    pub fn command_on_host(&self, id: usize, program: &Path) -> Command {
        let fd = self.host_fd(id);
        let mut command = Command::new(program);
        // SAFETY: setns is async-signal-safe; the closure allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        command
    }

    /// Which hosts (with their link up) hold [`VIP`], read in each host's
    /// namespace by the calling thread, which ends up in the client's.
    /// The calling thread must be one of the harness's own, kept for this.
    fn holders(&self, vip: Ipv4Addr) -> BTreeSet<usize> {
        let mut holders = BTreeSet::new();
        for id in 1..=self.hosts.len() {
            if !self.link_up(id) || enter(self.host_fd(id)).is_err() {
                continue;
            }
            if has_address(INTERFACE, vip) && self.link_up(id) {
                holders.insert(id);
            }
        }
        let _ = enter(self.client_fd());
        holders
    }

    /// The host the client's neighbour entry for [`VIP`] points to, read
    /// from the calling thread's namespace (the client's).
    fn neighbour(&self) -> Option<usize> {
        let table = std::fs::read_to_string("/proc/thread-self/net/arp").unwrap_or_default();
        let mac = arp_entry(&table, VIP)?;
        self.macs
            .iter()
            .position(|m| !m.is_empty() && m.eq_ignore_ascii_case(&mac))
            .map(|i| i + 1)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        self.host_files.clear();
        self.client_file = None;
        for ns in self.made.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Deletes the namespaces of [`Lan`]s whose process no longer runs.
fn remove_orphans() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX_NAME) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(pid) = digits.parse::<u32>() else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Whether interface `name` of the calling thread's namespace has `address`.
fn has_address(name: &str, address: Ipv4Addr) -> bool {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return false;
    }
    let mut found = false;
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: every node of the list getifaddrs returned is valid until
        // freeifaddrs; ifa_name is a NUL-terminated string, and ifa_addr,
        // when not null, points to a sockaddr of the family it names.
        unsafe {
            let entry = &*cursor;
            let addr = entry.ifa_addr;
            if !addr.is_null()
                && i32::from((*addr).sa_family) == libc::AF_INET
                && std::ffi::CStr::from_ptr(entry.ifa_name).to_bytes() == name.as_bytes()
            {
                let inet = &*(addr as *const libc::sockaddr_in);
                if Ipv4Addr::from(u32::from_be(inet.sin_addr.s_addr)) == address {
                    found = true;
                }
            }
            cursor = entry.ifa_next;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

/// The MAC address of `ip`'s complete entry in `/proc/net/arp` text.
fn arp_entry(table: &str, ip: &str) -> Option<String> {
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // IP address, HW type, Flags, HW address, Mask, Device.
        let complete = fields
            .get(2)
            .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok())
            .is_some_and(|flags| flags & 0x2 != 0);
        (fields.first() == Some(&ip) && complete).then(|| fields[3].to_string())
    })
}

/// What the sampler saw.
#[derive(Debug, Clone, Default)]
pub struct Sampled {
    /// Samples taken.
    pub samples: u64,
    /// Each change of the set of hosts (with their link up) holding the
    /// access point's address: (ms since the sampler started, holders).
    pub moves: Vec<(u64, BTreeSet<usize>)>,
    /// Each change of the host the client's neighbour entry points to.
    pub neighbour: Vec<(u64, Option<usize>)>,
    /// The longest time two or more hosts held the address at once (from
    /// the first sample that saw it to the first that did not).
    pub longest_double: Duration,
    /// Every time two or more hosts held the address at once: (ms since the
    /// sampler started, how long).
    pub doubles: Vec<(u64, Duration)>,
    /// The longest time the client's neighbour entry pointed to a host
    /// other than the single holder of the address (a stale ARP view).
    pub longest_stale_neighbour: Duration,
    /// The longest gap between two samples, the sampler's resolution.
    pub longest_gap: Duration,
}

impl Sampled {
    /// How many times the address went to a host other than the last one
    /// that held it alone.
    pub fn address_moves(&self) -> usize {
        let mut last = None;
        let mut moves = 0;
        for (_, holders) in &self.moves {
            if holders.len() == 1 {
                let holder = holders.iter().next().copied();
                if last.is_some() && last != holder {
                    moves += 1;
                }
                last = holder;
            }
        }
        moves
    }
}

/// Samples every host's addresses and the client's neighbour entry for the
/// access point every `period`, on a thread of its own, until dropped or
/// [`Sampler::finish`]ed.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Sampled>>,
}

impl Sampler {
    /// Starts sampling `lan`.
    pub fn start(lan: Arc<Lan>, period: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lan-sampler".into())
            .spawn(move || sample(&lan, period, &flag))
            .expect("cannot start the LAN sampler thread");
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops and returns what was seen.
    pub fn finish(mut self) -> Sampled {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn sample(lan: &Lan, period: Duration, stop: &AtomicBool) -> Sampled {
    let vip: Ipv4Addr = VIP.parse().expect("VIP is an IPv4 address");
    let start = Instant::now();
    let mut seen = Sampled::default();
    let mut holders: Option<BTreeSet<usize>> = None;
    let mut neighbour: Option<Option<usize>> = None;
    let mut double_since: Option<Instant> = None;
    let mut stale_since: Option<Instant> = None;
    let mut last = Instant::now();
    let ms = |at: Instant| (at - start).as_millis() as u64;
    while !stop.load(Ordering::SeqCst) {
        let now_holders = lan.holders(vip);
        let now_neighbour = lan.neighbour();
        let now = Instant::now();
        seen.samples += 1;
        seen.longest_gap = seen.longest_gap.max(now - last);
        last = now;
        if holders.as_ref() != Some(&now_holders) {
            seen.moves.push((ms(now), now_holders.clone()));
        }
        if neighbour != Some(now_neighbour) {
            seen.neighbour.push((ms(now), now_neighbour));
            neighbour = Some(now_neighbour);
        }
        match (now_holders.len() >= 2, double_since) {
            (true, None) => double_since = Some(now),
            (false, Some(since)) => {
                seen.longest_double = seen.longest_double.max(now - since);
                seen.doubles.push((ms(since), now - since));
                double_since = None;
            }
            _ => {}
        }
        let stale = now_holders.len() == 1
            && now_neighbour.is_some_and(|host| !now_holders.contains(&host));
        match (stale, stale_since) {
            (true, None) => stale_since = Some(now),
            (false, Some(since)) => {
                seen.longest_stale_neighbour = seen.longest_stale_neighbour.max(now - since);
                stale_since = None;
            }
            _ => {}
        }
        holders = Some(now_holders);
        std::thread::sleep(period);
    }
    if let Some(since) = double_since {
        seen.longest_double = seen.longest_double.max(since.elapsed());
        seen.doubles.push((ms(since), since.elapsed()));
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    // Only complete entries count: an incomplete one (flags 0x0) has no
    // address yet.
    #[test]
    fn arp_entries_are_read_from_the_kernel_table() {
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n\
                     198.51.100.11    0x1         0x2         aa:bb:cc:dd:ee:01     *        eth0\n\
                     198.51.100.100   0x1         0x2         aa:bb:cc:dd:ee:02     *        eth0\n\
                     198.51.100.12    0x1         0x0         00:00:00:00:00:00     *        eth0\n";
        assert_eq!(
            arp_entry(table, "198.51.100.100").as_deref(),
            Some("aa:bb:cc:dd:ee:02")
        );
        assert_eq!(arp_entry(table, "198.51.100.12"), None);
        assert_eq!(arp_entry(table, "198.51.100.13"), None);
    }

    // A move is a change of the single holder; a double answer in between
    // and a spell with no holder are not moves of their own.
    #[test]
    fn address_moves_count_changes_of_the_single_holder() {
        let set = |ids: &[usize]| ids.iter().copied().collect::<BTreeSet<usize>>();
        let seen = Sampled {
            moves: vec![
                (0, set(&[])),
                (10, set(&[1])),
                (20, set(&[])),
                (30, set(&[2])),
                (40, set(&[2, 3])),
                (50, set(&[3])),
                (60, set(&[])),
                (70, set(&[3])),
            ],
            ..Sampled::default()
        };
        assert_eq!(seen.address_moves(), 2);
    }
}
