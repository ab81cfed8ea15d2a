#!/usr/bin/env bash
# Run one shell command on the parent instance through SSM (no SSH port, no key pair), wait for it,
# print its output and exit with its status.
#   usage: deploy/scripts/ssm-run.sh INSTANCE_ID 'COMMAND' [TIMEOUT_SECONDS]
# Needs the AWS CLI v2 and python3 (to build the JSON parameters safely).
set -euo pipefail

if [[ $# -lt 2 ]]; then
  echo "usage: $0 INSTANCE_ID 'COMMAND' [TIMEOUT_SECONDS]" >&2
  exit 64
fi
instance=$1
command=$2
timeout=${3:-3600}
poll=${SSM_POLL_SECONDS:-5}
[[ $timeout =~ ^[0-9]+$ ]] || { echo "TIMEOUT_SECONDS must be a number" >&2; exit 64; }

params=$(python3 -c 'import json, sys; print(json.dumps({"commands": [sys.argv[1]], "executionTimeout": [sys.argv[2]]}))' \
  "$command" "$timeout")
id=$(aws ssm send-command --instance-ids "$instance" --document-name AWS-RunShellScript \
  --comment "nitro-llm" --parameters "$params" --query Command.CommandId --output text)

deadline=$((SECONDS + timeout + 120))
status=Pending
while [[ $status == Pending || $status == InProgress || $status == Delayed ]]; do
  if ((SECONDS > deadline)); then
    echo "gave up waiting for command $id on $instance" >&2
    exit 1
  fi
  sleep "$poll"
  status=$(aws ssm get-command-invocation --command-id "$id" --instance-id "$instance" \
    --query Status --output text 2>/dev/null || echo Pending)
done

aws ssm get-command-invocation --command-id "$id" --instance-id "$instance" \
  --query StandardOutputContent --output text
if [[ $status != Success ]]; then
  aws ssm get-command-invocation --command-id "$id" --instance-id "$instance" \
    --query StandardErrorContent --output text >&2
  echo "command $id on $instance ended with status $status" >&2
  exit 1
fi
