"""The Qt user interface: a thin layer over vaestudio.core, with heavy work in QThread workers."""
