//! The objects and status patches a kubelet would write: a Node registering
//! itself Ready, and a running Pod's status (what the EndpointSlice controller
//! reads: podIP, Ready, ContainersReady).

use std::net::Ipv4Addr;

use serde_json::{Value, json};

/// A Node object for a lab node: `name` as in the API, its pod CIDR, labels.
pub fn node_object(name: &str, pod_cidr: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": { "podCIDR": pod_cidr, "podCIDRs": [pod_cidr] },
    })
}

/// The Node status a kubelet posts: addresses and a Ready condition.
pub fn node_status(name: &str, ip: Ipv4Addr, now: &str) -> Value {
    json!({ "status": {
        "addresses": [
            { "type": "InternalIP", "address": ip.to_string() },
            { "type": "Hostname", "address": name },
        ],
        "conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "the Weft lab runs this node's pods",
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }],
        "nodeInfo": {
            "architecture": "amd64",
            "operatingSystem": "linux",
            "kubeletVersion": "v1.37.2",
            "containerRuntimeVersion": "weft-lab://1",
            "kernelVersion": "", "osImage": "", "bootID": "", "machineID": "",
            "systemUUID": "", "kubeProxyVersion": "",
        },
    }})
}

/// A container of a running pod: name, image and containerd id.
pub struct ContainerState<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub id: &'a str,
}

/// The status of a running pod at `ip` on a node at `host_ip`, Ready or not.
pub fn pod_status(
    ip: Ipv4Addr,
    host_ip: Ipv4Addr,
    containers: &[ContainerState<'_>],
    ready: bool,
    now: &str,
) -> Value {
    let truth = |b: bool| if b { "True" } else { "False" };
    let condition = |kind: &str, status: bool| json!({ "type": kind, "status": truth(status), "lastTransitionTime": now });
    let statuses: Vec<Value> = containers
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image,
                "imageID": "",
                "containerID": format!("containerd://{}", c.id),
                "ready": ready,
                "started": true,
                "restartCount": 0,
                "state": { "running": { "startedAt": now } },
            })
        })
        .collect();
    json!({ "status": {
        "phase": "Running",
        "hostIP": host_ip.to_string(),
        "hostIPs": [{ "ip": host_ip.to_string() }],
        "podIP": ip.to_string(),
        "podIPs": [{ "ip": ip.to_string() }],
        "startTime": now,
        "conditions": [
            condition("PodReadyToStartContainers", true),
            condition("Initialized", true),
            condition("Ready", ready),
            condition("ContainersReady", ready),
            condition("PodScheduled", true),
        ],
        "containerStatuses": statuses,
    }})
}

/// Now in RFC 3339, as the API's timestamps are written.
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil_from_days(0), (1970, 1, 1));
        assert_eq!(super::civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(super::civil_from_days(20_790), (2026, 12, 3));
    }
}
