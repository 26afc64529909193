//! A NAT rig in network namespaces (after `shared/dht/nat-rig/`): a "wan" namespace with a
//! bridge and the test DHT, two home routers doing nftables masquerade that drop unsolicited
//! inbound traffic on their wan leg, and a LAN namespace behind each. Nothing is connected
//! to the root namespace, so no packet leaves the rig; names carry the test's pid so runs do
//! not collide. Needs root, `ip` and `nft`; [`NatRig::unavailable`] says why not.

use std::process::Command;

/// The namespaces of one rig (deleted on drop).
pub struct NatRig {
    /// Prefix of the namespace names.
    pub prefix: String,
    made: Vec<String>,
}

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn nft(ns: &str, rules: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(rules.as_bytes()).map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The wan address of the test DHT.
pub const WAN_HOST: &str = "10.200.0.1";
/// The public (wan) address of router A; a peer behind it is seen from this address.
pub const ROUTER_A: &str = "10.200.0.11";
/// The public address of router B.
pub const ROUTER_B: &str = "10.200.0.12";

impl NatRig {
    /// Why the rig cannot be built here (not root, no `ip netns`, no `nft`), if so.
    pub fn unavailable() -> Option<String> {
        let uid = Command::new("id").arg("-u").output().ok();
        if uid.is_none_or(|o| String::from_utf8_lossy(&o.stdout).trim() != "0") {
            return Some("network namespaces need root".into());
        }
        if run(&["ip", "netns", "list"]).is_err() {
            return Some("`ip netns` is not available".into());
        }
        if run(&["nft", "--version"]).is_err() {
            return Some("`nft` (Debian package nftables) is not installed".into());
        }
        None
    }

    /// The namespace called `name` in this rig (`wan`, `nat-a`, `nat-b`, `lan-a`, `lan-b`).
    pub fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Builds the rig.
    pub fn setup() -> Result<NatRig, String> {
        let mut rig = NatRig {
            prefix: format!("apy{}-", std::process::id()),
            made: Vec::new(),
        };
        for n in ["wan", "nat-a", "nat-b", "lan-a", "lan-b"] {
            let ns = rig.ns(n);
            run(&["ip", "netns", "add", &ns])?;
            rig.made.push(ns.clone());
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
        }
        let wan = rig.ns("wan");
        run(&["ip", "-n", &wan, "link", "add", "br0", "type", "bridge"])?;
        run(&[
            "ip",
            "-n",
            &wan,
            "addr",
            "add",
            &format!("{WAN_HOST}/24"),
            "dev",
            "br0",
        ])?;
        run(&["ip", "-n", &wan, "link", "set", "br0", "up"])?;
        rig.router("a", ROUTER_A, "192.168.10")?;
        rig.router("b", ROUTER_B, "192.168.20")?;
        Ok(rig)
    }

    fn router(&self, tag: &str, wan_ip: &str, lan: &str) -> Result<(), String> {
        let (wan, r, l) = (
            self.ns("wan"),
            self.ns(&format!("nat-{tag}")),
            self.ns(&format!("lan-{tag}")),
        );
        let port = format!("v-{tag}");
        run(&[
            "ip", "link", "add", &port, "netns", &wan, "type", "veth", "peer", "name", "wan0",
            "netns", &r,
        ])?;
        run(&[
            "ip", "-n", &wan, "link", "set", &port, "master", "br0", "up",
        ])?;
        run(&[
            "ip",
            "-n",
            &r,
            "addr",
            "add",
            &format!("{wan_ip}/24"),
            "dev",
            "wan0",
        ])?;
        run(&["ip", "-n", &r, "link", "set", "wan0", "up"])?;
        run(&["ip", "-n", &r, "route", "add", "default", "via", WAN_HOST])?;
        run(&[
            "ip", "link", "add", "lan0", "netns", &r, "type", "veth", "peer", "name", "eth0",
            "netns", &l,
        ])?;
        run(&[
            "ip",
            "-n",
            &r,
            "addr",
            "add",
            &format!("{lan}.1/24"),
            "dev",
            "lan0",
        ])?;
        run(&["ip", "-n", &r, "link", "set", "lan0", "up"])?;
        run(&[
            "ip",
            "-n",
            &l,
            "addr",
            "add",
            &format!("{lan}.2/24"),
            "dev",
            "eth0",
        ])?;
        run(&["ip", "-n", &l, "link", "set", "eth0", "up"])?;
        run(&[
            "ip",
            "-n",
            &l,
            "route",
            "add",
            "default",
            "via",
            &format!("{lan}.1"),
        ])?;
        run(&[
            "ip",
            "netns",
            "exec",
            &r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])?;
        nft(
            &r,
            "table ip nat {\n chain postrouting {\n  type nat hook postrouting priority srcnat; policy accept;\n  oifname \"wan0\" masquerade\n }\n}\n",
        )?;
        // What home routers do, and what the rig needs (see shared/protocol/DHT-BRIDGE.md):
        // without it, a probe reaching the far router leaves a conntrack entry that remaps
        // the punch.
        nft(
            &r,
            "table inet filter {\n chain input {\n  type filter hook input priority filter; policy accept;\n  iifname \"wan0\" ct state established,related accept\n  iifname \"wan0\" drop\n }\n chain forward {\n  type filter hook forward priority filter; policy drop;\n  ct state established,related accept\n  iifname \"lan0\" oifname \"wan0\" accept\n }\n}\n",
        )?;
        Ok(())
    }
}

impl Drop for NatRig {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            // Processes still inside keep a namespace alive until they exit; deleting the
            // name is what matters here.
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}
