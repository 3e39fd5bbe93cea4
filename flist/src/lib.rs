//! zosfs flist (see its issue; built on zosfs-store).
