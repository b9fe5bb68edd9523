/* Configuration parsing: defaults, overrides, bounds, unknown keys with suggestions,
 * and the text round trip stored in model files. */
#include "ladle/config.h"
#include "testutil.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
    test_counts c = {0, 0};
    ladle_config cfg;
    char err[512];
    ladle_config_defaults(&cfg);
    EXPECT(&c, cfg.layers == 4 && cfg.heads == 4 && cfg.batch == 16, "defaults");

    EXPECT(&c, ladle_config_set(&cfg, "model.dim", "64", err, sizeof err) == 0 && cfg.dim == 64, "set int");
    EXPECT(&c, ladle_config_set(&cfg, "train.lr", "3e-4", err, sizeof err) == 0 && fabsf(cfg.lr - 3e-4f) < 1e-9f, "set float");
    EXPECT(&c, ladle_config_set(&cfg, "data.corpus", "/x/y.h5", err, sizeof err) == 0 && !strcmp(cfg.corpus, "/x/y.h5"), "set path");

    EXPECT(&c, ladle_config_set(&cfg, "model.layrs", "2", err, sizeof err) != 0 && strstr(err, "'model.layrs'") &&
                   strstr(err, "model.layers"), "unknown key suggests the closest: %s", err);
    EXPECT(&c, ladle_config_set(&cfg, "layers", "2", err, sizeof err) != 0 && strstr(err, "model.layers"),
           "short name suggests the full key: %s", err);
    EXPECT(&c, ladle_config_set(&cfg, "model.dim", "-4", err, sizeof err) != 0 && strstr(err, "model.dim"), "negative size: %s", err);
    EXPECT(&c, ladle_config_set(&cfg, "model.dim", "12x", err, sizeof err) != 0 && strstr(err, "12x"), "trailing junk: %s", err);
    EXPECT(&c, ladle_config_set(&cfg, "train.lr", "nan", err, sizeof err) != 0, "nan rejected");
    EXPECT(&c, ladle_config_set(&cfg, "train.beta2", "1.5", err, sizeof err) != 0, "out of range float rejected");

    ladle_config_defaults(&cfg);
    cfg.dim = 30; cfg.heads = 4;
    EXPECT(&c, ladle_config_validate(&cfg, err, sizeof err) != 0 && strstr(err, "model.heads"), "heads must divide dim: %s", err);

    /* round trip through text */
    ladle_config_defaults(&cfg);
    cfg.layers = 3; cfg.lr = 1.2345e-3f; cfg.seed = 123456789L;
    strcpy(cfg.run_dir, "some dir/with space");
    char *text = ladle_config_to_text(&cfg);
    ladle_config back;
    EXPECT(&c, ladle_config_from_text(&back, text, err, sizeof err) == 0, "parse own text: %s", err);
    EXPECT(&c, memcmp(&back, &cfg, sizeof cfg) == 0, "text round trip changes the configuration");
    free(text);

    /* a stored configuration of another version may hold keys this one lacks: skipped */
    EXPECT(&c, ladle_config_from_text(&back, "model.layers = 5\nrun.retired_key = 3\nmodel.dim = 24\n", err, sizeof err) == 0 &&
                   back.layers == 5 && back.dim == 24, "unknown stored key not skipped: %s", err);
    EXPECT(&c, ladle_config_from_text(&back, "model.layers = -5\n", err, sizeof err) != 0, "bad stored value accepted");

    /* comments, blank lines, line numbers in errors */
    EXPECT(&c, ladle_config_from_text(&back, "# comment\n\nmodel.layers = 2  # trailing\n", err, sizeof err) == 0 &&
                   back.layers == 2, "comments: %s", err);
    EXPECT(&c, ladle_config_from_text(&back, "model.layers = 2\nbogus line\n", err, sizeof err) != 0 && strstr(err, ":2:"),
           "line number in error: %s", err);
    /* the integer parser shared with the command line: exact bounds, no wrap, strict text */
    long long v = 7;
    EXPECT(&c, ladle_parse_integer("x", "9223372036854775807", 0, LLONG_MAX, &v, err, sizeof err) == 0 && v == LLONG_MAX,
           "LLONG_MAX: %s", err);
    EXPECT(&c, ladle_parse_integer("x", "-9223372036854775808", LLONG_MIN, 0, &v, err, sizeof err) == 0 && v == LLONG_MIN,
           "LLONG_MIN: %s", err);
    EXPECT(&c, ladle_parse_integer("x", "-0", 0, 1, &v, err, sizeof err) == 0 && v == 0, "-0: %s", err);
    static const char *const bad[] = {"9223372036854775808", "-9223372036854775809", "4294967296", "", "-", " 5", "+5",
                                      "5 ", "5\n", "12abc", "0x10", "1e3", "2.0", "--5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = 7;
        EXPECT(&c, ladle_parse_integer("--opt", bad[i], -10, INT_MAX, &v, err, sizeof err) != 0 && v == 7 &&
                       strstr(err, "--opt '") && strstr(err, "[-10, 2147483647]"), "'%s' accepted (%lld) or: %s", bad[i],
               v, err);
    }
    EXPECT(&c, ladle_parse_integer("n", "11", 1, 10, &v, err, sizeof err) != 0 && strstr(err, "n '11': expected an integer in [1, 10]"),
           "above max: %s", err);
    EXPECT(&c, ladle_config_set(&cfg, "train.batch", "4294967296", err, sizeof err) != 0 && strstr(err, "train.batch '4294967296'"),
           "key wraps: %s", err);
    EXPECT(&c, ladle_config_set(&cfg, "train.seed", "9000000000000000000", err, sizeof err) == 0 && cfg.seed == 9000000000000000000L,
           "train.seed at its max: %s", err);

    return test_summary(&c, "test_config");
}
