"""A pseudo-terminal whose far end runs a console, as a board's USB serial port does: prints
the terminal's path, then carries bytes between it and `argv[1:]` (the native console) until
that ends. For the npm CLI's monitor test."""
import os
import pty
import select
import subprocess
import sys
import tty

master, slave = pty.openpty()
tty.setraw(slave)  # bytes pass unchanged, as on a serial line
print(os.ttyname(slave), flush=True)
console = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
out = console.stdout.fileno()
while True:
    ready, _, _ = select.select([master, out], [], [])
    if master in ready:
        data = os.read(master, 4096)
        console.stdin.write(data)
    if out in ready:
        data = os.read(out, 4096)
        if not data:
            break
        os.write(master, data)
