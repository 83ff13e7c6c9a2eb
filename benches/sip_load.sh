#!/usr/bin/env bash
# SIP call load through zentrale: SIPp as the carrier places calls to the demo queue, SIPp
# as the agents' phones answers them; zentrale queues each call in acd-core, offers it to an
# agent, rings the agent's registered contact, bridges the legs through the media relay and
# tears both down on BYE. Compared, in the same run, with SIPp uac -> SIPp uas directly (the
# reference: what the load generator and this machine can do without zentrale).
#
#   benches/sip_load.sh [RATE] [CALLS] [AGENTS] [HOLD_RATE] [HOLD_SECONDS]
#
# Defaults: 1000 calls/s, 20000 short calls, 200 agents; then held calls at 100 calls/s for
# 20 s (about 2,000 concurrent). Needs: sipp (Debian sip-tester), curl, jq; a release build
# (`cargo build --release --bin zentrale`). Everything binds 127.0.0.1; every SIPp run is
# bounded by -m and `timeout`; every process started here is stopped by its PID.
set -euo pipefail

RATE=${1:-1000}
CALLS=${2:-20000}
AGENTS=${3:-200}
HOLD_RATE=${4:-100}
HOLD_S=${5:-20}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${ZENTRALE_BIN:-$ROOT/target/release/zentrale}
SC=$ROOT/tests/sipp
WORK=$(mktemp -d /tmp/zentrale-sipload.XXXXXX)
SIP_PORT=25060
HTTP_PORT=28080
UAS_PORT=25070
PIDS=()

cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(grep MemTotal /proc/meminfo | awk '{print int($2/1048576)" GiB"}'), $(uname -sr)"
echo "work dir: $WORK"

cat > "$WORK/zentrale.toml" <<EOF
data_dir = "$WORK/data"
[http]
listen = "127.0.0.1:$HTTP_PORT"
[[sip.listen]]
transport = "udp"
address = "127.0.0.1:$SIP_PORT"
[rtp]
address = "127.0.0.1"
port_min = 30000
port_max = 59999
[log]
level = "warn"
EOF

"$BIN" serve --demo --config "$WORK/zentrale.toml" > "$WORK/server.log" 2>&1 &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 1 100); do
    grep -q "zentrale is running" "$WORK/server.log" && break
    sleep 0.2
done
grep -q "zentrale is running" "$WORK/server.log" || { cat "$WORK/server.log"; exit 1; }

API=http://127.0.0.1:$HTTP_PORT/api/v1
TOKEN=$(curl -sf "$API/auth/login" -H 'Content-Type: application/json' \
    -d '{"tenant":"demo","username":"admin","password":"demo-admin"}' | jq -r .token)
auth=(-H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json')
curl -sf -X PUT "$API/routing/queues/support" "${auth[@]}" \
    -d '{"strategy":"longest_idle","wrap_up_s":0}' > /dev/null
# Each load agent gets a SIP password through the API (stored as HA1, like any agent's).
echo "SEQUENTIAL" > "$WORK/agents.csv"
for i in $(seq 1 "$AGENTS"); do
    ext=$((2000 + i))
    curl -sf -X PUT "$API/routing/agents/$ext" "${auth[@]}" -d '{"queues":["support"]}' > /dev/null
    curl -sf -X PUT "$API/routing/agents/$ext/sip" "${auth[@]}" -d "{\"password\":\"load$ext-pw\"}" > /dev/null
    echo "$ext;[authentication username=$ext password=load$ext-pw]" >> "$WORK/agents.csv"
done
sleep 1

# SIPp does not expand [fieldN] inside [authentication], so the CSV carries the whole keyword.
# All agents' phones are one SIPp UAS; each agent registers a Contact pointing at it.
(cd "$WORK" && exec timeout $((CALLS / RATE + HOLD_S * 3 + 300)) sipp 127.0.0.1:$SIP_PORT -sf "$SC/agent_answer.xml" \
    -i 127.0.0.1 -p $UAS_PORT -mp 26000 -nostdin -max_socket 10000 -trace_err -trace_stat -stf "$WORK/agents-uas.csv" \
    -m $((CALLS + HOLD_RATE * HOLD_S + 1000)) > /dev/null 2>&1) &
PIDS+=("$!")
sleep 0.5
cat > "$WORK/register_many.xml" <<'EOF'
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register agents">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      From: <sip:[field0]@[remote_ip]>;tag=[call_number]
      To: <sip:[field0]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[field0]@[local_ip]:[contact_port]>
      Expires: 3600
      Content-Length: 0
    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      From: <sip:[field0]@[remote_ip]>;tag=[call_number]
      To: <sip:[field0]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:[field0]@[local_ip]:[contact_port]>
      Expires: 3600
      [field1]
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
</scenario>
EOF
(cd "$WORK" && timeout 60 sipp 127.0.0.1:$SIP_PORT -sf register_many.xml -inf agents.csv \
    -i 127.0.0.1 -p 25071 -key contact_port $UAS_PORT -m "$AGENTS" -r 200 -nostdin \
    -trace_err > /dev/null 2>&1) || { echo "agent registration failed"; cat "$WORK"/*errors.log; exit 1; }
sleep 1

run_carrier() { # name target rate calls hold_ms scenario-args...
    local name=$1 target=$2 rate=$3 calls=$4 hold=$5; shift 5
    local limit=$((calls / rate + hold / 1000 + 120))
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$WORK" && timeout "$limit" sipp "$target" "$@" -i 127.0.0.1 -nostdin -r "$rate" \
        -m "$calls" -d "$hold" -max_socket 10000 -trace_stat -stf "$name.csv" \
        -trace_rtt -rtt_freq 1000 -fd 1 > /dev/null 2>&1) || true
    t1=$(date +%s.%N)
    local stat="$WORK/$name.csv"
    local ok fail
    ok=$(tail -1 "$stat" | awk -F';' -v h="$(head -1 "$stat")" 'BEGIN{n=split(h,H,";")} {for(i=1;i<=n;i++) if(H[i]=="SuccessfulCall(C)") print $i}')
    fail=$(tail -1 "$stat" | awk -F';' -v h="$(head -1 "$stat")" 'BEGIN{n=split(h,H,";")} {for(i=1;i<=n;i++) if(H[i]=="FailedCall(C)") print $i}')
    local rtt
    rtt=$(ls "$WORK"/*_rtt.csv 2>/dev/null | head -1 || true)
    local pct=""
    if [ -n "$rtt" ]; then
        # SIPp's response-time log (-trace_rtt): one line per call, ms from INVITE to its 200.
        pct=$(awk -F';' 'NR>1 && $2!="" {print $2}' "$rtt" | sort -n | awk '{a[NR]=$1} END {if (NR>0) printf "answer time ms p50 %.1f p99 %.1f p999 %.1f (n=%d)", a[int(NR*0.5)+1], a[int(NR*0.99)+1], a[int(NR*0.999)>=NR?NR:int(NR*0.999)+1], NR}')
        rm -f "$WORK"/*_rtt.csv
    fi
    printf '%-28s rate %5d/s calls %6d ok %6s failed %5s wall %6.1fs achieved %7.1f calls/s  %s  load: %s\n' \
        "$name" "$rate" "$calls" "$ok" "$fail" "$(echo "$t1 - $t0" | bc)" \
        "$(echo "$ok / ($t1 - $t0 - $hold / 1000)" | bc -l)" "$pct" "$(cut -d' ' -f1-3 /proc/loadavg)"
}

echo "uptime before: $(uptime)"
run_carrier "zentrale-short" 127.0.0.1:$SIP_PORT "$RATE" "$CALLS" 0 \
    -sf "$SC/carrier_call.xml" -s 100 -p 25080 -mp 27000
HELD=$((HOLD_RATE * HOLD_S))
run_carrier "zentrale-held-${HOLD_S}s" 127.0.0.1:$SIP_PORT "$HOLD_RATE" "$HELD" $((HOLD_S * 1000)) \
    -sf "$SC/carrier_call.xml" -s 100 -p 25081 -mp 27100 -l $((HELD + 100))
RSS=$(awk '/VmHWM/ {print $2" "$3}' /proc/$SERVER/status)
echo "zentrale peak RSS: $RSS"

# Reference: SIPp uac -> SIPp uas, same machine, same rate, no zentrale in between.
timeout $((CALLS / RATE + 120)) sipp -sn uas -i 127.0.0.1 -p 25090 -nostdin -max_socket 10000 \
    -m "$CALLS" > /dev/null 2>&1 &
PIDS+=("$!")
sleep 0.5
run_carrier "reference-sipp-uac-uas" 127.0.0.1:25090 "$RATE" "$CALLS" 0 -sn uac -p 25082
echo "uptime after: $(uptime)"
