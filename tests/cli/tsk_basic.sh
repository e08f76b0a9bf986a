#!/usr/bin/env bash
# End-to-end test of build/tsk: every command on a fresh store, the JSON
# shapes of DESIGN.md section 8, and the exit-code contract (0 ok, 1 failure
# with a one-line reason, 2 usage). Run by build.sh with TSK and B set.
set -u
TSK=${TSK:-build/tsk}
W=$(mktemp -d "${B:-/tmp}/cli.XXXXXX")
trap 'rm -rf "$W"' EXIT
fails=0
check() { # check DESCRIPTION COMMAND...: the command must succeed
    local d=$1; shift
    if ! "$@"; then echo "FAIL: $d"; fails=$((fails + 1)); fi
}
expect_exit() { # expect_exit CODE DESCRIPTION CMD...: exit code and a one-line stderr
    local code=$1 d=$2; shift 2
    "$@" >"$W/out" 2>"$W/err"; local rc=$?
    if [ "$rc" != "$code" ]; then echo "FAIL: $d: exit $rc, wanted $code"; cat "$W/err"; fails=$((fails + 1)); return; fi
    if [ "$code" != 0 ] && [ "$(wc -l < "$W/err")" -lt 1 ]; then echo "FAIL: $d: no reason on stderr"; fails=$((fails + 1)); fi
    if [ "$code" = 1 ] && [ "$(wc -l < "$W/err")" -gt 1 ]; then echo "FAIL: $d: reason is not one line"; cat "$W/err"; fails=$((fails + 1)); fi
}

S=$W/store
SESSION='{"id":"s1","name":"Refactor the parser","description":"Deep work on the JSON parser, caf\u00e9","startTime":1700000000000,"endTime":1700003600000,"status":"completed","tags":["work","parser"],"topicIds":["t1"],"category":"Development","subCategory":"Backend","custom":{"nested":[1,2.5,"x",null,true]},"screenshots":[{"id":"sh1","timestamp":1700000001000,"activity":"Editing parser.c","extra":"kept"}],"audioSegments":[{"id":"a1","timestamp":1700000002000,"transcription":"hello"}],"videoChunks":[],"summary":{"narrative":"Rewrote the parser"}}'
printf '%s' "$SESSION" > "$W/s1.json"
printf '{"id":"s2","name":"Team meeting","startTime":1690000000000,"status":"active","tags":["meeting"],"category":"Meetings"}' > "$W/s2.json"

# usage errors: exit 2
expect_exit 2 "no command" "$TSK"
expect_exit 2 "unknown command" "$TSK" frobnicate "$S"
expect_exit 2 "unknown option" "$TSK" list "$S" --bogus
expect_exit 2 "missing argument" "$TSK" show "$S"
expect_exit 0 "help" "$TSK" help

# reading a store that does not exist: exit 1, nothing created
expect_exit 1 "list of a missing store" "$TSK" list "$S"
check "missing store not created" test ! -e "$S"

expect_exit 0 "init" "$TSK" init "$S"
expect_exit 0 "add s1" "$TSK" add "$S" "$W/s1.json" --json
check "add --json names the id" grep -q '"ids": \["s1"\]' "$W/out"
expect_exit 0 "add s2 (option after --)" "$TSK" add "$S" -- "$W/s2.json"

# show returns the session exactly as given (same key order here)
expect_exit 0 "show s1" "$TSK" show "$S" s1
check "show equals the input" cmp -s <(tr -d '\n' < "$W/out") <(printf '%s' "$SESSION")

# list: newest first, JSON array of metadata
expect_exit 0 "list --json" "$TSK" list --json "$S"
check "list is an array, s1 before s2" grep -q '^\[{"id":"s1".*"id":"s2"' <(tr -d '\n' < "$W/out")
expect_exit 0 "list human" "$TSK" list "$S"
check "list human names both" grep -q "2 sessions" "$W/out"

# append a screenshot (twice the same bytes: one attachment) and an audio segment
head -c 5000 /dev/urandom > "$W/img.bin"
expect_exit 0 "append screenshot" "$TSK" append "$S" s1 --screenshot "$W/img.bin" --activity "Testing" --json
HASH=$(sha256sum "$W/img.bin" | cut -c1-64)
check "append reports the hash" grep -q "$HASH" "$W/out"
expect_exit 0 "append same screenshot to s2" "$TSK" append "$S" s2 --screenshot "$W/img.bin"
expect_exit 0 "append audio" "$TSK" append "$S" s1 --audio "second segment"
expect_exit 2 "append needs one kind" "$TSK" append "$S" s1
expect_exit 1 "append to a missing session" "$TSK" append "$S" nosuch --audio x

# get returns the exact bytes
"$TSK" get "$S" "$HASH" > "$W/got.bin"
check "get returns the bytes" cmp -s "$W/img.bin" "$W/got.bin"
expect_exit 1 "get unknown hash" "$TSK" get "$S" 0000000000000000000000000000000000000000000000000000000000000000
expect_exit 1 "get invalid hash" "$TSK" get "$S" ../../etc/passwd

# search with every option
expect_exit 0 "search text" "$TSK" search "$S" --text parser --json
check "search text finds s1" grep -q '{"total": 1, "ids": \["s1"\]}' "$W/out"
expect_exit 0 "search prefix" "$TSK" search "$S" --text 'pars*' --json
check "search prefix finds s1" grep -q '"ids": \["s1"\]' "$W/out"
expect_exit 0 "search tag" "$TSK" search "$S" --tag meeting --json
check "search tag finds s2" grep -q '"ids": \["s2"\]' "$W/out"
expect_exit 0 "search OR" "$TSK" search "$S" --tag meeting --tag parser --or --json
check "search OR finds both" grep -q '"total": 2' "$W/out"
expect_exit 0 "search AND of two tags" "$TSK" search "$S" --tag meeting --tag parser --json
check "search AND finds none" grep -q '"total": 0' "$W/out"
expect_exit 0 "search filters" "$TSK" search "$S" --category Development --subcategory Backend --status completed --topic t1 --json
check "search filters find s1" grep -q '"ids": \["s1"\]' "$W/out"
expect_exit 0 "search date range" "$TSK" search "$S" --from 1695000000000 --to 1800000000000 --json
check "search range finds s1" grep -q '"ids": \["s1"\]' "$W/out"
expect_exit 0 "search limit/offset" "$TSK" search "$S" --limit 1 --offset 1 --json
check "search offset gives s2 of 2" grep -q '{"total": 2, "ids": \["s2"\]}' "$W/out"
expect_exit 0 "search rank" "$TSK" search "$S" --text "parser json" --or --rank --json
expect_exit 2 "search bad number" "$TSK" search "$S" --from yesterday

# --index-records (or TSK_INDEX_RECORDS=1): record and document text is searchable
expect_exit 0 "record text is not searched by default" "$TSK" search "$S" --text editing --json
check "activity not found without the option" grep -q '"total": 0' "$W/out"
expect_exit 0 "search --index-records" "$TSK" search "$S" --text editing --index-records --json
check "--index-records finds the screenshot activity" grep -q '{"total": 1, "ids": \["s1"\]}' "$W/out"
expect_exit 0 "summary narrative" "$TSK" search "$S" --index-records --text rewrote --json
check "--index-records finds the summary narrative" grep -q '"ids": \["s1"\]' "$W/out"
expect_exit 0 "append audio with TSK_INDEX_RECORDS=1" env TSK_INDEX_RECORDS=1 "$TSK" append "$S" s2 --audio "quarterly numbers"
expect_exit 0 "search with TSK_INDEX_RECORDS=1" env TSK_INDEX_RECORDS=1 "$TSK" search "$S" --text quarterly --json
check "the appended transcription is found" grep -q '{"total": 1, "ids": \["s2"\]}' "$W/out"
expect_exit 0 "stats with record text" env TSK_INDEX_RECORDS=1 "$TSK" stats "$S" --json
check "stats says recordText" grep -q '"recordText": true' "$W/out"
expect_exit 0 "and without the option again" "$TSK" search "$S" --text quarterly --json
check "transcription not found without the option" grep -q '"total": 0' "$W/out"
expect_exit 2 "--index-records takes no value" "$TSK" search "$S" --index-records=1

# stats shape
expect_exit 0 "stats --json" "$TSK" stats "$S" --json
check "stats has sessions" grep -q '"sessions": 2' "$W/out"
check "stats dedup" grep -q '"objects": 1, "logicalBytes": 10000, "storedBytes": 5000, "dedupSavedBytes": 5000' "$W/out"

# rm and gc: the attachment stays while s2 references it
expect_exit 0 "rm s1" "$TSK" rm "$S" s1
expect_exit 1 "show removed session" "$TSK" show "$S" s1
expect_exit 1 "rm again" "$TSK" rm "$S" s1
expect_exit 1 "rm invalid id" "$TSK" rm "$S" "../x"
expect_exit 0 "gc" "$TSK" gc "$S" --json
"$TSK" get "$S" "$HASH" > "$W/got2.bin"
check "attachment kept while referenced" cmp -s "$W/img.bin" "$W/got2.bin"

# a corrupt metadata file gives exit 1 with the path, never a crash
printf '{"id":"s2","name":' > "$S/sessions-chunked/s2/metadata.json"
expect_exit 1 "show corrupt session" "$TSK" show "$S" s2
check "corrupt message names the file" grep -q "metadata.json" "$W/err"

# a file tsk does not know is left alone
echo keep > "$S/notes.txt"
"$TSK" list "$S" >/dev/null 2>&1
check "unknown files untouched" grep -q keep "$S/notes.txt"

[ "$fails" = 0 ] && echo "tsk_basic: all checks passed"
exit "$fails"
