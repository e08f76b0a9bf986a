/* fuzz/fuzz_image.c: the screenshot-conversion path - signature sniffing,
 * the PNG guard (chunk walk, IHDR checks, bounded IDAT inflate), stb_image's
 * PNG/JPEG decoders behind it, libwebp's encoder and the verify decode.
 *
 * The last input byte picks the options (lossy or lossless, verify or not);
 * the rest is the image. The pixel limit is small (256 Kpx) so a run stays
 * fast. Anything must convert or fail with TS_E_CORRUPT / TS_E_INVALID,
 * leaving no bytes; what converts must be a WebP whose dimensions are the
 * input's and, when lossless, whose pixels are stb's decode of the input.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -I. -DTASKSTORE_STB_ZLIB -DTASKSTORE_WEBP \
 *       fuzz/fuzz_image.c -o build/fuzz_image -lwebp -lm
 *   build/fuzz_image -dict=fuzz/image.dict fuzz/corpus/image
 * without libFuzzer: add fuzz/replay_main.c and drop "fuzzer," above.
 */
#ifndef TASKSTORE_WEBP
#define TASKSTORE_WEBP
#endif
#define TASKSTORE_IMPLEMENTATION
#include "taskstore.h"
#include <stdlib.h>

#define CHECK(x) do { if (!(x)) { fprintf(stderr, "fuzz_image: check failed: %s (line %d)\n", #x, __LINE__); abort(); } } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ts_webp_options o;
    ts_blob out;
    ts_image_info info;
    ts_result r;
    const char *mime;
    unsigned mode;
    if (size < 2) return 0;
    mode = data[size - 1];
    size--;
    memset(&o, 0, sizeof o);
    o.max_pixels = (uint64_t)1 << 18;
    o.lossy = (int)(mode & 1);
    o.verify = (mode & 2) != 0;
    o.method = 1;                 /* fastest effort: the decoders are the target */
    o.quality = o.lossy ? 50.0f : 1.0f;
    mime = ts_image_sniff(data, size);
    r = ts_image_to_webp(data, size, &o, NULL, &out, &info);
    if (r == TS_OK) {
        int w = 0, h = 0;
        CHECK(mime && strcmp(mime, "image/webp") != 0);
        CHECK(out.data && out.len > 0);
        CHECK(strcmp(ts_image_sniff(out.data, out.len), "image/webp") == 0);
        CHECK(WebPGetInfo((const uint8_t *)out.data, out.len, &w, &h));
        CHECK((uint32_t)w == info.width && (uint32_t)h == info.height);
        CHECK((uint64_t)w * (uint64_t)h <= o.max_pixels);
        if (!o.lossy) {
            /* lossless: the WebP holds exactly what stb decoded */
            int x = 0, y = 0, c = 0;
            unsigned char *px = stbi_load_from_memory(data, (int)size, &x, &y, &c, 4);
            uint8_t *back = WebPDecodeRGBA((const uint8_t *)out.data, out.len, &w, &h);
            CHECK(px && back && x == w && y == h);
            CHECK(memcmp(px, back, (size_t)w * (size_t)h * 4) == 0);
            stbi_image_free(px);
            WebPFree(back);
        }
        ts_blob_free(&out);
    } else {
        CHECK(r == TS_E_CORRUPT || r == TS_E_INVALID);
        CHECK(out.data == NULL);
        if (!mime || strcmp(mime, "image/webp") == 0) CHECK(r == TS_E_INVALID);
    }
    return 0;
}
