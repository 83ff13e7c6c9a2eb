#!/usr/bin/env bash
# Regenerates zentrale's own announcements and hold music in sip-gateway/prompts/.
#
# Everything is made here from text (espeak-ng) and synthesis (sox), so the files carry no
# third-party licence. The output is committed: neither tool is needed to build or test.
# Format: 8 kHz, mono, 16-bit PCM WAV, leading/trailing silence trimmed to keep composed
# sentences ("you are caller number" + "3") natural, normalised to -3 dBFS.
#
# Needs: espeak-ng, sox (Debian: apt-get install espeak-ng sox).
set -euo pipefail
cd "$(dirname "$0")/.."
out=sip-gateway/prompts
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# sox: -D no dither and -R repeatable, so regenerating gives the same bytes.
to_prompt() { # in.wav out.wav
  sox -R -D "$1" -r 8000 -c 1 -b 16 "$2" \
    silence 1 0.02 0.3% reverse silence 1 0.02 0.3% reverse \
    norm -3 pad 0.05 0.15
}

say() { # voice lang name text...
  local voice=$1 lang=$2 name=$3; shift 3
  mkdir -p "$out/$lang"
  espeak-ng -v "$voice" -s 150 -w "$tmp/raw.wav" "$*"
  to_prompt "$tmp/raw.wav" "$out/$lang/$name.wav"
}

# name | German | English
while IFS='|' read -r name de en; do
  [ -z "$name" ] && continue
  say de de "$name" "$de"
  say en-gb en "$name" "$en"
done <<'TEXT'
welcome|Herzlich willkommen. Schön, dass Sie anrufen.|Welcome, and thank you for calling.
please_hold|Bitte bleiben Sie am Apparat, Sie werden gleich verbunden.|Please hold, you will be connected shortly.
caller_number|Sie sind Anrufer Nummer|You are caller number
ewt_intro|Ihre voraussichtliche Wartezeit beträgt etwa|Your expected waiting time is about
minutes|Minuten|minutes
one_minute|eine Minute|one minute
less_than_one_minute|weniger als eine Minute|less than one minute
press_1_callback|Wenn Sie zurückgerufen werden möchten, drücken Sie die 1.|Press 1 for a callback.
callback_confirmed|Vielen Dank, wir rufen Sie zurück.|Thank you, we will call you back.
closed|Leider haben wir zurzeit geschlossen.|We are closed.
leave_message|Bitte hinterlassen Sie eine Nachricht nach dem Signalton.|Please leave a message after the tone.
invalid_input|Diese Eingabe ist leider ungültig.|Sorry, that input is not valid.
goodbye|Auf Wiederhören.|Goodbye.
TEXT

# Numbers 1-20 ("number_N"), spoken from the digits by each language's voice.
for n in $(seq 1 20); do
  say de de "number_$n" "$n"
  say en-gb en "number_$n" "$n"
done

# The language menu is bilingual by nature: each half in its own voice.
mkdir -p "$out/common"
espeak-ng -v de -s 150 -w "$tmp/menu_de.wav" "Für Deutsch drücken Sie die 1."
espeak-ng -v en-gb -s 150 -w "$tmp/menu_en.wav" "For English, press 2."
to_prompt "$tmp/menu_de.wav" "$tmp/menu_de8.wav"
to_prompt "$tmp/menu_en.wav" "$tmp/menu_en8.wav"
sox -R -D "$tmp/menu_de8.wav" "$tmp/menu_en8.wav" "$out/common/language_menu.wav"

# Hold music: a I-vi-IV-V progression (C, Am, F, G) of plucked triads over a soft bass,
# 2 s per chord, 8 s per loop. Each chord decays to near silence, so the loop point is clean.
chord() { # out.wav bass notes...
  local f=$1 bass=$2; shift 2
  local args=(synth 2 sine "$bass")
  for n in "$@"; do args+=(pluck "$n"); done
  sox -R -D -n -r 8000 -c $(( $# + 1 )) -b 16 "$f" "${args[@]}" \
    remix - fade q 0.02 2 0.3 vol 0.5
}
chord "$tmp/c1.wav" C3 C4 E4 G4
chord "$tmp/c2.wav" A2 A3 C4 E4
chord "$tmp/c3.wav" F2 F3 A3 C4
chord "$tmp/c4.wav" G2 G3 B3 D4
sox -R -D "$tmp"/c1.wav "$tmp"/c2.wav "$tmp"/c3.wav "$tmp"/c4.wav -r 8000 -c 1 -b 16 \
  "$out/common/hold_music.wav" norm -6

echo "prompts written to $out:"
du -sh "$out"/*
