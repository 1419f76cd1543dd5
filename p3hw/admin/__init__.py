"""Administration: IPC server, store and the p3ctl command."""
