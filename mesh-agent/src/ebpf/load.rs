//! Load, attach and pin the kernel programs, or re-adopt what a previous agent pinned.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, CgroupSockAddr, SkLookup, SkMsg, SockOps};
use aya::{Ebpf, EbpfLoader};
use mesh_common::{map_names, program_names as prog};
use tracing::{info, warn};

use super::maps::MapHandles;
use super::object::OBJECT;
use super::pins::PinLayout;

/// Programs attached to the cgroup, in attach order. connect* last, so that by the
/// time a connection is redirected, sockops and getpeername are already in place.
const CGROUP_PROGRAMS: [&str; 5] = [
    prog::SOCKOPS,
    prog::GETPEERNAME4,
    prog::GETPEERNAME6,
    prog::CONNECT4,
    prog::CONNECT6,
];

const PINNED_MAPS: [&str; 13] = [
    map_names::ENROLLED_NETNS,
    map_names::ORIG_DST_BY_COOKIE,
    map_names::ORIG_DST_BY_PORT,
    map_names::INBOUND_SOCKETS,
    map_names::INBOUND_CONFIG,
    map_names::EXCLUDED_PORTS,
    map_names::STATS,
    map_names::KUBEPODS_ROOT,
    map_names::POD_CGROUPS,
    map_names::FAST_PATH,
    map_names::FAST_PATH_SOCKETS,
    map_names::FAST_PATH_DIALS,
    map_names::FAST_PATH_FELL_BACK,
];

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// cgroup v2 directory to attach to (the cgroup v2 root in a cluster, the lab
    /// cgroup in tests and the demo).
    pub cgroup: PathBuf,
    /// The agent's own bpffs directory.
    pub bpffs_dir: PathBuf,
    /// Kernel-side log level (aya-log): 1 error … 5 trace.
    pub kernel_log_level: u8,
}

/// Whether the programs were loaded by this process or adopted from pins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Loaded,
    Adopted,
}

/// The agent's handle on its kernel programs and maps.
pub struct KernelPrograms {
    pub origin: Origin,
    layout: PinLayout,
    maps: MapHandles,
    sk_lookup: SkLookup,
    /// The object, kept when loaded here: its log ring buffer feeds the agent's log.
    ebpf: Option<Ebpf>,
    connect4_program_id: u32,
}

impl KernelPrograms {
    /// Adopts the programs pinned under `bpffs_dir` if a previous agent left them,
    /// otherwise loads, attaches and pins them.
    /// Freshly loaded, the fast path is off until `MapHandles::set_fast_path`.
    pub fn open(opts: &LoadOptions) -> Result<Self> {
        let layout = PinLayout::new(&opts.bpffs_dir);
        refuse_other_versions(&layout)?;
        if layout.cgroup_link(prog::CONNECT4).exists() {
            let adopted = Self::adopt(&layout).with_context(|| {
                format!(
                    "adopt the programs pinned under {}",
                    layout.version_dir().display()
                )
            })?;
            info!(bpffs = %layout.version_dir().display(), "adopted pinned kernel programs");
            return Ok(adopted);
        }
        match Self::load(opts, &layout) {
            Ok(loaded) => {
                info!(cgroup = %opts.cgroup.display(), bpffs = %layout.version_dir().display(), "loaded and attached kernel programs");
                Ok(loaded)
            }
            Err(err) => {
                // Leave nothing half-attached behind.
                if let Err(cleanup) = remove_pins(&layout) {
                    warn!(error = %cleanup, "cleaning up after a failed load");
                }
                Err(err)
            }
        }
    }

    fn load(opts: &LoadOptions, layout: &PinLayout) -> Result<Self> {
        let cgroup = File::open(&opts.cgroup)
            .with_context(|| format!("open cgroup {}", opts.cgroup.display()))?;
        for dir in [layout.maps_dir(), layout.progs_dir(), layout.links_dir()] {
            std::fs::create_dir_all(&dir).with_context(|| {
                format!(
                    "create {} (is {} on a bpffs?)",
                    dir.display(),
                    layout.root().display()
                )
            })?;
        }
        let mut loader = EbpfLoader::new();
        for name in PINNED_MAPS {
            loader.map_pin_path(name, layout.map(name));
        }
        loader.override_global("AYA_LOG_LEVEL", &opts.kernel_log_level, false);
        let mut ebpf = loader
            .load(OBJECT)
            .context("load the kernel programs' object")?;
        // Before sockops can put a socket in the map: a socket only gets the
        // programs attached when it joins.
        attach_sk_msg(&mut ebpf).context("attach sk_msg to the fast path's sockhash")?;

        for name in CGROUP_PROGRAMS {
            attach_to_cgroup(&mut ebpf, name, &cgroup, &layout.cgroup_link(name))
                .with_context(|| format!("attach {name} to {}", opts.cgroup.display()))?;
        }
        let sk_lookup: &mut SkLookup = program(&mut ebpf, prog::SK_LOOKUP)?.try_into()?;
        sk_lookup.load().context("load sk_lookup")?;
        sk_lookup
            .pin(layout.sk_lookup_program())
            .context("pin sk_lookup")?;

        let maps = MapHandles::from_pins(layout)?;
        let sk_lookup = SkLookup::from_pin(layout.sk_lookup_program())?;
        let connect4_program_id = pinned_link_program_id(&layout.cgroup_link(prog::CONNECT4))?;
        Ok(KernelPrograms {
            origin: Origin::Loaded,
            layout: layout.clone(),
            maps,
            sk_lookup,
            ebpf: Some(ebpf),
            connect4_program_id,
        })
    }

    fn adopt(layout: &PinLayout) -> Result<Self> {
        for name in CGROUP_PROGRAMS {
            let path = layout.cgroup_link(name);
            if !path.exists() {
                bail!(
                    "{} is missing: the pins are from an incomplete load; remove {} and restart",
                    path.display(),
                    layout.root().display()
                );
            }
        }
        let maps = MapHandles::from_pins(layout)?;
        let sk_lookup = SkLookup::from_pin(layout.sk_lookup_program())
            .with_context(|| format!("open {}", layout.sk_lookup_program().display()))?;
        let connect4_program_id = pinned_link_program_id(&layout.cgroup_link(prog::CONNECT4))?;
        Ok(KernelPrograms {
            origin: Origin::Adopted,
            layout: layout.clone(),
            maps,
            sk_lookup,
            ebpf: None,
            connect4_program_id,
        })
    }

    pub fn layout(&self) -> &PinLayout {
        &self.layout
    }

    pub fn maps(&self) -> &MapHandles {
        &self.maps
    }

    pub fn maps_mut(&mut self) -> &mut MapHandles {
        &mut self.maps
    }

    /// A separate handle on the original-destination map, for the proxies to
    /// read while the agent keeps writing the others.
    pub fn orig_dst_reader(
        &self,
    ) -> Result<aya::maps::HashMap<aya::maps::MapData, mesh_common::PortKey, mesh_common::OrigDst>>
    {
        let path = self.layout.map(map_names::ORIG_DST_BY_PORT);
        let data = aya::maps::MapData::from_pin(&path)
            .with_context(|| format!("open {}", path.display()))?;
        Ok(aya::maps::Map::from_map_data(data)?.try_into()?)
    }

    /// Reads the kernel counters through a handle of its own, for the metrics
    /// server to call at every scrape.
    pub fn stats_reader(&self) -> Result<impl Fn() -> super::KernelStats + Send + Sync + 'static> {
        let path = self.layout.map(map_names::STATS);
        let data = aya::maps::MapData::from_pin(&path)
            .with_context(|| format!("open {}", path.display()))?;
        let counters: aya::maps::PerCpuArray<_, u64> =
            aya::maps::Map::from_map_data(data)?.try_into()?;
        Ok(move || super::KernelStats::read(&counters))
    }

    /// Takes the kernel log ring buffer reader, when there is one to take.
    pub fn take_logger(&mut self) -> Option<aya_log::EbpfLogger<&'static dyn log::Log>> {
        let logger = match self.ebpf.as_mut() {
            Some(ebpf) => aya_log::EbpfLogger::init(ebpf),
            None => aya_log::EbpfLogger::init_from_id(self.connect4_program_id),
        };
        logger
            .map_err(|e| warn!(error = %e, "kernel logs unavailable"))
            .ok()
    }

    /// Attaches sk_lookup to a pod's netns, unless a pinned link already does.
    pub fn attach_sk_lookup(&mut self, netns: impl AsFd, netns_cookie: u64) -> Result<()> {
        let pin = self.layout.sk_lookup_link(netns_cookie);
        if pin.exists() {
            return Ok(());
        }
        let id = self
            .sk_lookup
            .attach(netns)
            .context("attach sk_lookup to the pod netns")?;
        let link: FdLink = self.sk_lookup.take_link(id)?.into();
        link.pin(&pin)
            .with_context(|| format!("pin {}", pin.display()))?;
        Ok(())
    }

    /// Detaches sk_lookup from a pod's netns (no-op if it is not attached).
    pub fn detach_sk_lookup(&mut self, netns_cookie: u64) -> Result<()> {
        detach_pinned_link(&self.layout.sk_lookup_link(netns_cookie))
    }
}

/// Pins of another layout version are attached programs with maps this agent
/// cannot read or write correctly: never adopt them, never load beside them
/// (two sets of programs would capture the same pods).
fn refuse_other_versions(layout: &PinLayout) -> Result<()> {
    let found = layout.other_versions();
    if found.is_empty() {
        return Ok(());
    }
    let dirs: Vec<String> = found.iter().map(|d| d.display().to_string()).collect();
    bail!(
        "kernel programs of another agent version are pinned under {} (map layout \
         version {} expected in {}); run `mesh-agent reset --bpffs-dir {}` to remove \
         them (meshed pods are not captured until this agent starts), then start it again",
        dirs.join(", "),
        mesh_common::PIN_LAYOUT_VERSION,
        layout.version_dir().display(),
        layout.root().display()
    )
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .with_context(|| format!("program {name} is missing from the embedded object"))
}

fn attach_to_cgroup(ebpf: &mut Ebpf, name: &str, cgroup: &File, pin: &Path) -> Result<()> {
    // bpf_link attachments (kernel >= 5.7) always coexist with other programs on
    // the cgroup (a CNI's, another agent's), and the kernel rejects any flag on
    // them: "Single" means no flag here, not exclusive.
    let mode = CgroupAttachMode::Single;
    let link: FdLink = if name == prog::SOCKOPS {
        let p: &mut SockOps = program(ebpf, name)?.try_into()?;
        p.load()?;
        let id = p.attach(cgroup, mode)?;
        p.take_link(id)?.try_into()?
    } else {
        let p: &mut CgroupSockAddr = program(ebpf, name)?.try_into()?;
        p.load()?;
        let id = p.attach(cgroup, mode)?;
        p.take_link(id)?.try_into()?
    };
    link.pin(pin)
        .with_context(|| format!("pin {}", pin.display()))?;
    Ok(())
}

/// Attaches the fast path's sk_msg program to its sockhash. The attachment
/// belongs to the map, pinned, so it outlives this process like the links do;
/// it goes with the map (`mesh-agent reset`).
fn attach_sk_msg(ebpf: &mut Ebpf) -> Result<()> {
    let map: aya::maps::SockHash<_, mesh_common::SockKey> = ebpf
        .map(map_names::FAST_PATH_SOCKETS)
        .context("the fast path's sockhash is missing from the object")?
        .try_into()?;
    let map_fd = map.fd().try_clone()?;
    let p: &mut SkMsg = program(ebpf, prog::SK_MSG)?.try_into()?;
    p.load()?;
    let id = p.attach(&map_fd)?;
    // Dropping the link would detach the program (aya's prog-attach links do):
    // keep the attachment for the map's lifetime instead.
    std::mem::forget(p.take_link(id)?);
    Ok(())
}

fn pinned_link_program_id(pin: &Path) -> Result<u32> {
    let link =
        FdLink::from(PinnedLink::from_pin(pin).with_context(|| format!("open {}", pin.display()))?);
    Ok(link.info()?.program_id())
}

fn detach_pinned_link(pin: &Path) -> Result<()> {
    if !pin.exists() {
        return Ok(());
    }
    let link = PinnedLink::from_pin(pin).with_context(|| format!("open {}", pin.display()))?;
    // Unpinning drops the last reference: the kernel detaches the link.
    drop(
        link.unpin()
            .with_context(|| format!("unpin {}", pin.display()))?,
    );
    Ok(())
}

/// Removes everything the agent pinned under its bpffs directory: every link is
/// detached and the programs and maps are freed once no process holds them.
/// Pins of every layout version are removed, older agents' included.
pub fn remove_pins(layout: &PinLayout) -> Result<()> {
    if !layout.root().exists() {
        return Ok(());
    }
    for version in layout.all_versions() {
        remove_version(&version)?;
        if version != layout.root() && version.exists() {
            std::fs::remove_dir(&version)
                .with_context(|| format!("remove {}", version.display()))?;
        }
    }
    Ok(())
}

/// Removes one version's pins: `links/`, `progs/` and `maps/` under `dir`.
fn remove_version(dir: &Path) -> Result<()> {
    if let Ok(entries) = std::fs::read_dir(dir.join("links")) {
        for entry in entries.filter_map(Result::ok) {
            detach_pinned_link(&entry.path())?;
        }
    }
    for dir in ["links", "progs", "maps"].map(|d| dir.join(d)) {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.filter_map(Result::ok) {
                std::fs::remove_file(entry.path())
                    .with_context(|| format!("remove {}", entry.path().display()))?;
            }
        }
        if dir.exists() {
            std::fs::remove_dir(&dir).with_context(|| format!("remove {}", dir.display()))?;
        }
    }
    Ok(())
}
