/* demo_images.h - makes real-looking "screenshots" for the examples: a
   desktop-style window (title bar, sidebar, lines of text, a cursor) drawn
   into RGB pixels and written as a valid PNG, with no image library. The
   PNG uses deflate's stored blocks (no compression), like a capture tool
   that favours speed; the store's WebP conversion then shows what it saves.
   Deterministic: the same seed gives the same bytes, so duplicates dedup. */
#ifndef DEMO_IMAGES_H
#define DEMO_IMAGES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint32_t demo_crc_table[256];

static void demo_crc_init(void)
{
    uint32_t i, k, c;
    if (demo_crc_table[1]) return;
    for (i = 0; i < 256; i++) {
        c = i;
        for (k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        demo_crc_table[i] = c;
    }
}

static uint32_t demo_crc(uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    while (n--) crc = demo_crc_table[(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

static void demo_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);  p[3] = (unsigned char)v;
}

/* Appends one PNG chunk (length, type, data, CRC) at out + *pos. */
static void demo_png_chunk(unsigned char *out, size_t *pos, const char *type,
                           const unsigned char *data, size_t n)
{
    uint32_t crc;
    demo_be32(out + *pos, (uint32_t)n);
    memcpy(out + *pos + 4, type, 4);
    if (n) memcpy(out + *pos + 8, data, n);
    crc = demo_crc(0, out + *pos + 4, n + 4);
    demo_be32(out + *pos + 8 + n, crc);
    *pos += n + 12;
}

/* Encodes w x h RGB pixels as a PNG; returns a malloc'd buffer. */
static unsigned char *demo_png_encode(const unsigned char *rgb, int w, int h, size_t *len_out)
{
    size_t row = (size_t)w * 3 + 1, raw_len = row * (size_t)h;
    size_t blocks = (raw_len + 65534) / 65535;
    size_t z_len = 2 + raw_len + blocks * 5 + 4;
    size_t cap = 8 + 25 + (z_len + 12) + 12, pos = 0, i, done;
    unsigned char *out = (unsigned char *)malloc(cap), *z = (unsigned char *)malloc(z_len);
    unsigned char ihdr[13];
    uint32_t a = 1, b = 0;
    size_t zp = 0;
    int y;
    if (!out || !z) { free(out); free(z); return NULL; }
    demo_crc_init();
    memcpy(out, "\x89PNG\r\n\x1a\n", 8); pos = 8;
    demo_be32(ihdr, (uint32_t)w); demo_be32(ihdr + 4, (uint32_t)h);
    ihdr[8] = 8; ihdr[9] = 2; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
    demo_png_chunk(out, &pos, "IHDR", ihdr, 13);
    /* zlib stream of stored blocks over the filtered rows (filter 0) */
    z[zp++] = 0x78; z[zp++] = 0x01;
    done = 0;
    for (y = 0, i = 0; done < raw_len;) {
        size_t n = raw_len - done > 65535 ? 65535 : raw_len - done, k;
        z[zp++] = (unsigned char)(done + n == raw_len);
        z[zp++] = (unsigned char)(n & 0xFF); z[zp++] = (unsigned char)(n >> 8);
        z[zp++] = (unsigned char)(~n & 0xFF); z[zp++] = (unsigned char)((~n >> 8) & 0xFF);
        for (k = 0; k < n; k++, i++) {
            size_t r = i / row, c = i % row;
            unsigned char v = c == 0 ? 0 : rgb[r * (size_t)w * 3 + c - 1];
            z[zp++] = v;
            a = (a + v) % 65521u; b = (b + a) % 65521u;
        }
        done += n;
    }
    (void)y;
    demo_be32(z + zp, (b << 16) | a); zp += 4;
    demo_png_chunk(out, &pos, "IDAT", z, zp);
    demo_png_chunk(out, &pos, "IEND", NULL, 0);
    free(z);
    *len_out = pos;
    return out;
}

static uint32_t demo_rng(uint32_t *s)
{
    *s ^= *s << 13; *s ^= *s >> 17; *s ^= *s << 5;
    return *s;
}

static void demo_rect(unsigned char *rgb, int w, int h, int x0, int y0, int x1, int y1,
                      unsigned char r, unsigned char g, unsigned char b)
{
    int x, y;
    for (y = y0 < 0 ? 0 : y0; y < y1 && y < h; y++)
        for (x = x0 < 0 ? 0 : x0; x < x1 && x < w; x++) {
            unsigned char *p = rgb + ((size_t)y * (size_t)w + (size_t)x) * 3;
            p[0] = r; p[1] = g; p[2] = b;
        }
}

/* A w x h "screenshot" of an editor window whose content depends on seed. */
static unsigned char *demo_screenshot_png(int w, int h, uint32_t seed, size_t *len_out)
{
    unsigned char *rgb = (unsigned char *)malloc((size_t)w * (size_t)h * 3), *png;
    uint32_t s = seed * 2654435761u + 1;
    int line, y;
    if (!rgb) return NULL;
    demo_rect(rgb, w, h, 0, 0, w, h, 246, 246, 248);                 /* window */
    demo_rect(rgb, w, h, 0, 0, w, 24, 52, 58, 70);                   /* title bar */
    demo_rect(rgb, w, h, 8, 8, 16, 16, 237, 95, 87);                 /* buttons */
    demo_rect(rgb, w, h, 22, 8, 30, 16, 245, 190, 79);
    demo_rect(rgb, w, h, 36, 8, 44, 16, 98, 197, 84);
    demo_rect(rgb, w, h, 0, 24, w / 5, h, 231, 234, 239);            /* sidebar */
    for (line = 0, y = 34; y < h - 10; y += 14, line++) {
        int indent = (int)(demo_rng(&s) % 5) * 12, len = 40 + (int)(demo_rng(&s) % (unsigned)(w / 2));
        unsigned char hue = (unsigned char)(demo_rng(&s) % 3);
        int x = w / 5 + 12 + indent, word;
        if (line % 3 == 0) demo_rect(rgb, w, h, 10, y, w / 5 - 10, y + 6, 180, 186, 196); /* file list */
        for (word = 0; x < w / 5 + 12 + indent + len && x < w - 20; word++) {
            int wl = 10 + (int)(demo_rng(&s) % 40);
            unsigned char c0 = hue == 0 ? 40 : hue == 1 ? 28 : 140, c1 = hue == 1 ? 110 : 40,
                          c2 = hue == 2 ? 40 : 160;
            demo_rect(rgb, w, h, x, y, x + wl, y + 7, c0, c1, c2);
            x += wl + 6;
        }
    }
    demo_rect(rgb, w, h, w / 2, h / 2, w / 2 + 2, h / 2 + 12, 20, 20, 20); /* cursor */
    png = demo_png_encode(rgb, w, h, len_out);
    free(rgb);
    return png;
}

#endif
