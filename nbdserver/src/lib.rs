//! zosfs nbdserver (see its issue; built on zosfs-store).
