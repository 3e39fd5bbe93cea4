//! zosfs fsmount (see its issue; built on zosfs-store).
