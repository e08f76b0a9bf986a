#!/usr/bin/env bash
# End-to-end test of tsk on a generated legacy store: status, dry run,
# migrate, list, show, search, verify, compress, stats, rollback, and error
# paths. Run by build.sh with TSK, B and DEMO set.
set -u
TSK=${TSK:-build/tsk}
DEMO=${DEMO:-build/demo}
W=$(mktemp -d "${B:-/tmp}/clim.XXXXXX")
trap 'rm -rf "$W"' EXIT
fails=0
check() { local d=$1; shift; if ! "$@"; then echo "FAIL: $d"; fails=$((fails + 1)); fi; }
expect_exit() {
    local code=$1 d=$2; shift 2
    "$@" >"$W/out" 2>"$W/err"; local rc=$?
    if [ "$rc" != "$code" ]; then echo "FAIL: $d: exit $rc, wanted $code"; head -5 "$W/err"; fails=$((fails + 1)); return; fi
    if [ "$code" = 1 ] && [ "$(grep -cv '^migrate:\|^compress:' "$W/err")" -ne 1 ]; then
        echo "FAIL: $d: reason is not one line"; cat "$W/err"; fails=$((fails + 1)); fi
}
S=$W/store
"$DEMO" --legacy "$S" || { echo "FAIL: cannot generate the legacy store"; exit 1; }
cp "$S/sessions/session-03.json" "$W/legacy-03.json"
n_before=$(find "$S" -type f | wc -l)

expect_exit 0 "status" "$TSK" status "$S" --json
check "status: 12 legacy" grep -q '"total":12,"chunked":0,"legacy":12' "$W/out"

expect_exit 0 "dry run" "$TSK" migrate "$S" --dry-run --json
check "dry run reports 12" grep -q '"migrated":12' "$W/out"
check "dry run wrote nothing" test "$(find "$S" -type f | wc -l)" = "$n_before"

expect_exit 0 "migrate" "$TSK" migrate "$S" --json
check "migrated 12" grep -q '"migrated":12' "$W/out"
check "no failures" grep -q '"failed":\[\]' "$W/out"
expect_exit 0 "status after" "$TSK" status "$S" --json
check "status: all chunked" grep -q '"total":12,"chunked":12,"legacy":0,"percentage":100' "$W/out"
expect_exit 0 "migrate again: nothing to do" "$TSK" migrate "$S" --json
check "second run migrates none" grep -q '"migrated":0' "$W/out"

expect_exit 0 "list" "$TSK" list "$S" --json
check "list has 12 sessions" test "$(tr -d '\n' < "$W/out" | grep -o '"storageVersion"' | wc -l)" = 12
expect_exit 0 "show" "$TSK" show "$S" session-03
check "show keeps attachmentId and adds attachmentHash" grep -q '"attachmentId":"att-03-0","activity":"Design review: onboarding, step 1","attachmentHash":"[0-9a-f]\{64\}"' "$W/out"
# the shown session is the legacy one plus attachmentHash (and nothing else)
check "show equals legacy + attachmentHash" cmp -s <(sed -E 's/,"attachmentHash":"[0-9a-f]{64}"//g' "$W/out" | tr -d '\n') <(tr -d '\n' < "$W/legacy-03.json")
HASH=$(grep -o '"attachmentHash":"[0-9a-f]*"' "$W/out" | head -1 | cut -d'"' -f4)
"$TSK" get "$S" "$HASH" > "$W/shot.png"
check "attachment is the decoded PNG" test "$(head -c 4 "$W/shot.png" | od -An -c | tr -d ' ')" = '211PNG'
check "attachment hash matches" test "$(sha256sum < "$W/shot.png" | cut -c1-64)" = "$HASH"

expect_exit 0 "search after migration" "$TSK" search "$S" --text parser --json
check "search finds session-00" grep -q '"ids": \["session-00"\]' "$W/out"

expect_exit 0 "verify" "$TSK" verify "$S" --json
check "verify ok" grep -q '"ok": true' "$W/out"

expect_exit 0 "compress with webp" "$TSK" compress "$S" --age-days 0 --webp --json
check "compress converted screenshots" grep -q '"imagesConverted": [1-9]' "$W/out"
"$TSK" get "$S" "$HASH" > "$W/shot2.bin"
check "compressed attachment still loads" test -s "$W/shot2.bin"
expect_exit 0 "show after compress" "$TSK" show "$S" session-03
check "session reads the same after compress" cmp -s <(sed -E 's/,"attachmentHash":"[0-9a-f]{64}"//g' "$W/out" | tr -d '\n') <(tr -d '\n' < "$W/legacy-03.json")
expect_exit 0 "stats" "$TSK" stats "$S" --json
check "stats has compression" grep -q '"compression": {' "$W/out"
check "stats has dedup savings" grep -q '"dedupSavedBytes": [1-9]' "$W/out"
expect_exit 0 "verify after compress" "$TSK" verify "$S" --json
check "verify ok after compress" grep -q '"ok": true' "$W/out"

# tampering is found
OBJ=$(find "$S/attachments-ca" -name 'data.*' | head -1)
cp "$OBJ" "$W/obj.bak"
printf 'x' >> "$OBJ"
expect_exit 1 "verify finds a tampered attachment" "$TSK" verify "$S" --json
check "verify reports not ok" grep -q '"ok": false' "$W/out"
cp "$W/obj.bak" "$OBJ"

expect_exit 0 "rollback one" "$TSK" rollback "$S" session-03
check "legacy file restored byte for byte" cmp -s "$S/sessions/session-03.json" "$W/legacy-03.json"
expect_exit 0 "status after rollback" "$TSK" status "$S" --json
check "status: 1 legacy" grep -q '"legacy":1' "$W/out"
expect_exit 1 "rollback without backup" "$TSK" rollback "$S" nosuch
expect_exit 0 "rollback all" "$TSK" rollback "$S" --all --json
expect_exit 0 "status after rollback all" "$TSK" status "$S" --json
check "status: all legacy again" grep -q '"chunked":0,"legacy":12' "$W/out"
expect_exit 2 "migrate bad step" "$TSK" migrate "$S" --step bogus

# a broken legacy session is a per-session failure, the rest migrate
printf '{"id":"broken","name":' > "$S/sessions/broken.json"
expect_exit 1 "migrate with one broken session" "$TSK" migrate "$S" --json
check "12 migrated despite the broken one" grep -q '"migrated":12' "$W/out"
check "broken session named with reason" grep -q '"id":"broken"' "$W/out"
check "broken legacy file kept" test -f "$S/sessions/broken.json"

[ "$fails" = 0 ] && echo "tsk_migrate: all checks passed"
exit "$fails"
