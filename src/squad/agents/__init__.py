"""Running agent subprocesses: spawning and supervising (runner), progress parsing, the demo agent."""
