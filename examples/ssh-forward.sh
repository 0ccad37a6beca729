#!/usr/bin/env bash
# SSH through nattrav: reach an SSH server behind a NAT by its URI, nothing to open on its router.
#
#   on the server:  nattrav expose 22 --broker BROKER --identity ~/.config/nattrav/ssh-id   # prints nattrav://k-...
#   on the client:  nattrav forward nattrav://k-... --listen 2222 --broker BROKER
#                   ssh -p 2222 you@127.0.0.1
#
# Run as it is (as root: it starts its own sshd on loopback, with its own keys), it does all of
# that on this machine, then logs in once and runs a command over the forwarded connection.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
nattrav=(node "$here/../dist/src/cli/nattrav.cjs")
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { node -e 'const s = require("node:net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'; }
# Waits (up to 15 s) until FILE has a line matching PATTERN, and prints the first such line.
wait_for() {
  for _ in $(seq 150); do
    if grep -m1 -E "$2" "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "ssh-forward: timed out waiting for $2 in $1" >&2
  cat "$1" >&2 || true
  return 1
}

# 1. An SSH server on loopback: its own host key, one authorized key, no passwords.
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/user_key"
cp "$work/user_key.pub" "$work/authorized_keys"
sshd_port=$(free_port)
cat > "$work/sshd_config" <<EOF
Port $sshd_port
ListenAddress 127.0.0.1
HostKey $work/host_key
AuthorizedKeysFile $work/authorized_keys
PidFile $work/sshd.pid
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
EOF
mkdir -p /run/sshd
/usr/sbin/sshd -D -e -f "$work/sshd_config" 2>"$work/sshd.log" &
pids+=($!)

# 2. A broker (on a public host in real life).
broker_port=$(free_port)
"${nattrav[@]}" broker --listen "127.0.0.1:$broker_port" 2>"$work/broker.log" &
pids+=($!)
wait_for "$work/broker.log" '"event":"listening"' >/dev/null
broker="127.0.0.1:$broker_port"

# 3. On the server's side: expose the SSH server; its URI is the result on stdout.
"${nattrav[@]}" expose "127.0.0.1:$sshd_port" --broker "$broker" --identity "$work/ssh-identity" >"$work/uri" 2>"$work/expose.log" &
pids+=($!)
uri=$(wait_for "$work/uri" '^nattrav://')

# 4. On the client's side: a local port that leads to it; its address is the result on stdout.
forward_port=$(free_port)
"${nattrav[@]}" forward "$uri" --listen "127.0.0.1:$forward_port" --broker "$broker" >"$work/forward" 2>"$work/forward.log" &
pids+=($!)
wait_for "$work/forward" . >/dev/null

# 5. Plain ssh, through the forwarded port: end-to-end TLS between the two nattrav peers, SSH inside.
ssh -p "$forward_port" -i "$work/user_key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
  -o LogLevel=ERROR -o BatchMode=yes "$(id -un)@127.0.0.1" 'echo "ssh: logged in as $(id -un) over nattrav"'
echo "exposed as $uri"
