#!/bin/sh
# One-shot for compose.yaml (and tests/integration/test_deploy.py): the recordings bucket with Object
# Lock and a default COMPLIANCE retention. Safe to run again: an existing bucket is kept.
#   S3_ENDPOINT  the S3 server (http://s3:8333 in compose)
#   BUCKET       the bucket name
#   RETENTION_DAYS  the bucket's default retention (pgwitness also locks every object itself,
#                   recorder.retention_days)
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION  as for any aws command
set -eu
: "${S3_ENDPOINT:?}" "${BUCKET:?}" "${RETENTION_DAYS:=1}"

# Path-style requests (http://s3:8333/BUCKET): a compose host name has no per-bucket DNS.
# (The CLI already uses path style with --endpoint-url; this says so explicitly.) A config
# file of our own, so that running this never touches ~/.aws.
AWS_CONFIG_FILE=$(mktemp)
export AWS_CONFIG_FILE
printf '[default]\ns3 =\n    addressing_style = path\n' > "$AWS_CONFIG_FILE"
trap 'rm -f "$AWS_CONFIG_FILE"' EXIT

s3api() { aws --endpoint-url "$S3_ENDPOINT" s3api "$@"; }

tries=0
until s3api list-buckets >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -ge 120 ]; then
    echo "create-bucket: no answer from $S3_ENDPOINT after $tries tries" >&2
    exit 1
  fi
  sleep 1
done

if s3api head-bucket --bucket "$BUCKET" >/dev/null 2>&1; then
  echo "create-bucket: $BUCKET exists"
else
  s3api create-bucket --bucket "$BUCKET" --object-lock-enabled-for-bucket >/dev/null
  echo "create-bucket: created $BUCKET with Object Lock"
fi
s3api put-object-lock-configuration --bucket "$BUCKET" --object-lock-configuration \
  "{\"ObjectLockEnabled\":\"Enabled\",\"Rule\":{\"DefaultRetention\":{\"Mode\":\"COMPLIANCE\",\"Days\":$RETENTION_DAYS}}}"
s3api get-object-lock-configuration --bucket "$BUCKET"
