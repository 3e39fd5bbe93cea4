//! Loop devices through /dev/loop-control and the LOOP_CONFIGURE ioctl
//! (kernel ≥ 5.8), without losetup.
//!
//! Devices are attached with LO_FLAGS_AUTOCLEAR: the kernel detaches the
//! device by itself when its last user (the btrfs mount) goes away, so a
//! crashed fsmount cannot leak a loop device once its volume is unmounted.
//! An explicit [`detach`] remains for devices that were never mounted.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;

/// `struct loop_info64` of <linux/loop.h>.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` of <linux/loop.h>.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

/// An attached loop device. The open handle keeps the device bound (with
/// autoclear, closing the last handle before anything else opened the
/// device would detach it): drop it only after the device is mounted.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    _dev: File,
}

fn get_free() -> Result<u32> {
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| Error::io("open /dev/loop-control", e))?;
    // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
    let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
    if n < 0 {
        return Err(Error::last_os("LOOP_CTL_GET_FREE on /dev/loop-control"));
    }
    Ok(n as u32)
}

fn configure(dev: &File, backing: &File, flags: u32) -> std::io::Result<()> {
    // SAFETY: LoopConfig is plain old data; all-zero is its documented default.
    let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
    cfg.fd = backing.as_raw_fd() as u32;
    cfg.info.lo_flags = flags;
    // SAFETY: cfg is a valid loop_config that lives across the call; both fds are open.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Attach `image` to a free loop device (autoclear, direct I/O when the
/// backing filesystem allows it).
pub fn attach(image: &Path) -> Result<LoopDevice> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| Error::io(format!("open volume image {}", image.display()), e))?;
    // Another process may take the free device between GET_FREE and
    // CONFIGURE (EBUSY): ask again a bounded number of times.
    for _ in 0..16 {
        let n = get_free()?;
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        let mut res = configure(&dev, &backing, LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO);
        if matches!(&res, Err(e) if e.raw_os_error() == Some(libc::EINVAL)) {
            res = configure(&dev, &backing, LO_FLAGS_AUTOCLEAR);
        }
        match res {
            Ok(()) => return Ok(LoopDevice { path, _dev: dev }),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => continue,
            Err(e) => {
                return Err(Error::io(
                    format!("LOOP_CONFIGURE {} with {}", path.display(), image.display()),
                    e,
                ));
            }
        }
    }
    Err(Error::new(ErrorKind::Busy, format!("no free loop device for {}", image.display())))
}

/// Detach a loop device; a device already detached is not an error.
pub fn detach(dev: &Path) -> Result<()> {
    let f = match OpenOptions::new().read(true).open(dev) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("open {}", dev.display()), e)),
    };
    // SAFETY: LOOP_CLR_FD takes no argument.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD, 0) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENXIO) {
            return Ok(());
        }
        return Err(Error::io(format!("detach {}", dev.display()), e));
    }
    Ok(())
}

/// Loop devices currently backed by `image` (from sysfs).
pub fn backed_by(image: &Path) -> Result<Vec<PathBuf>> {
    let want = std::fs::canonicalize(image)
        .map_err(|e| Error::io(format!("resolve {}", image.display()), e))?;
    let mut out = Vec::new();
    let dir = match std::fs::read_dir("/sys/block") {
        Ok(d) => d,
        Err(e) => return Err(Error::io("list /sys/block", e)),
    };
    for ent in dir.flatten() {
        let name = ent.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(bf) = std::fs::read_to_string(ent.path().join("loop/backing_file")) else {
            continue;
        };
        if Path::new(bf.trim_end_matches('\n')) == want {
            out.push(PathBuf::from("/dev").join(name));
        }
    }
    out.sort();
    Ok(out)
}

/// Major:minor of a block device node.
pub fn dev_numbers(dev: &Path) -> Result<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(dev).map_err(|e| Error::io(format!("stat {}", dev.display()), e))?;
    let rdev = md.rdev();
    Ok((libc::major(rdev), libc::minor(rdev)))
}
