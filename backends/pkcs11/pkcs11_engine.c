/*
 * pkcs11_engine.c — the PKCS#11 crypto engine (docs/engines.md): a PKCS#11 module loaded with dlopen, the SA keys as
 * session objects that cannot leave the token (CKA_SENSITIVE true,
 * CKA_EXTRACTABLE false), and AES-GCM seal/open with C_Encrypt / C_Decrypt
 * and CKM_AES_GCM (PKCS#11 v2.40 §2.10.x: CK_GCM_PARAMS, output =
 * ciphertext ‖ tag).
 *
 * The ring, the worker thread that makes the calls (so the packet worker
 * never blocks in the token), faults and failover are the lookaside driver
 * (native/src/lookaside.c); the token is its core. The Python half of this
 * backend (key generation in the token, python-pkcs11) is beside it in
 * backends/pkcs11.
 *
 * Two sessions: one for key objects (the control path, under a mutex) and
 * one for crypto (only the engine's worker thread). The module is initialized
 * with CKF_OS_LOCKING_OK; if the process had already initialized it (the
 * key source, python-pkcs11), it is left initialized at close.
 */
#include "p3dp.h"
#include "p3_backend.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The PKCS#11 header comes from Debian's libp11-kit-dev (packaging/bootstrap.sh
 * installs it). Without it the build fails, never silently: an engine that is
 * quietly missing only shows up as failed tests on the next machine. A build
 * that must go without says so: CFLAGS=-DP3HW_WITHOUT_PKCS11; the engine then
 * refuses with P3-E612 and `p3hw doctor` lists it as compiled out. */
#if defined(__has_include)
#if __has_include(<p11-kit-1/p11-kit/pkcs11.h>)
#define P3_PKCS11_HEADER_FOUND 1
#endif
#endif

#if defined(P3HW_WITHOUT_PKCS11)
/* left out on purpose */
#elif defined(P3_PKCS11_HEADER_FOUND)
#define P3_HAVE_PKCS11 1
#else
#error "PKCS#11 header <p11-kit-1/p11-kit/pkcs11.h> not found: apt-get install libp11-kit-dev (packaging/bootstrap.sh), or build with CFLAGS=-DP3HW_WITHOUT_PKCS11 to leave the PKCS#11 engine out"
#endif

#ifdef P3_HAVE_PKCS11

#include <dlfcn.h>
#include <openssl/crypto.h>
#include <p11-kit-1/p11-kit/pkcs11.h>
#include <pthread.h>

struct p3_p11 {
    void *lib;
    CK_FUNCTION_LIST_PTR f;
    CK_SESSION_HANDLE admin, crypto;
    int admin_open, crypto_open, finalize_at_close;
    pthread_mutex_t admin_lock;
    uint8_t *in, *out;            /* the worker thread's gather/scatter buffers */
    size_t room;
};

static int pin_error(CK_RV rv)
{
    return rv == CKR_PIN_INCORRECT || rv == CKR_PIN_LOCKED || rv == CKR_PIN_INVALID ||
           rv == CKR_PIN_LEN_RANGE || rv == CKR_PIN_EXPIRED;
}

static void p3_p11_close(struct p3_p11 *t)
{
    if (!t)
        return;
    if (t->f) {
        if (t->crypto_open)
            t->f->C_CloseSession(t->crypto);
        if (t->admin_open) {
            t->f->C_Logout(t->admin);
            t->f->C_CloseSession(t->admin);
        }
        if (t->finalize_at_close)
            t->f->C_Finalize(NULL);
    }
    if (t->lib)
        dlclose(t->lib);
    if (t->in)
        OPENSSL_cleanse(t->in, t->room);
    if (t->out)
        OPENSSL_cleanse(t->out, t->room);
    free(t->in);
    free(t->out);
    pthread_mutex_destroy(&t->admin_lock);
    free(t);
}

/* The slot whose token carries this label (CK_TOKEN_INFO.label is 32
 * octets, blank padded), or -P3R_PKCS11_TOKEN. */
static int find_slot(struct p3_p11 *t, const char *label, CK_SLOT_ID *slot)
{
    CK_SLOT_ID slots[64];
    CK_ULONG n = 64;
    char want[32];
    size_t len = strlen(label);

    if (len > 32 || t->f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
        return -P3R_PKCS11_TOKEN;
    memset(want, ' ', sizeof(want));
    memcpy(want, label, len);
    for (CK_ULONG i = 0; i < n && i < 64; i++) {
        CK_TOKEN_INFO info;
        if (t->f->C_GetTokenInfo(slots[i], &info) == CKR_OK && memcmp(info.label, want, 32) == 0) {
            *slot = slots[i];
            return 0;
        }
    }
    return -P3R_PKCS11_TOKEN;
}

static struct p3_p11 *p3_p11_open(const char *module, const char *label, const char *pin, int *err)
{
    struct p3_p11 *t = calloc(1, sizeof(*t));
    CK_C_GetFunctionList get_list;
    CK_C_INITIALIZE_ARGS args;
    CK_SLOT_ID slot = 0;
    CK_RV rv;

    *err = -P3R_PKCS11_OPERATION;
    if (!t)
        return NULL;
    pthread_mutex_init(&t->admin_lock, NULL);
    if (!module || !*module || !label || !pin) {
        *err = -P3R_PKCS11_MODULE;
        goto fail;
    }
    t->room = P3DP_MAX_FRAME_BYTES + 64;
    t->in = malloc(t->room);
    t->out = malloc(t->room);
    if (!t->in || !t->out)
        goto fail;
    /* doctor and the config check verify the ELF exports first; here a
     * wrong file is still only an error, never a crash. */
    t->lib = dlopen(module, RTLD_NOW | RTLD_LOCAL);
    *err = -P3R_PKCS11_MODULE;
    if (!t->lib)
        goto fail;
    get_list = (CK_C_GetFunctionList)(uintptr_t)dlsym(t->lib, "C_GetFunctionList");
    if (!get_list || get_list(&t->f) != CKR_OK || !t->f) {
        t->f = NULL;
        goto fail;
    }
    memset(&args, 0, sizeof(args));
    args.flags = CKF_OS_LOCKING_OK;
    rv = t->f->C_Initialize(&args);
    if (rv == CKR_OK)
        t->finalize_at_close = 1;
    else if (rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
        goto fail;
    if ((*err = find_slot(t, label, &slot)) != 0)
        goto fail;
    *err = -P3R_PKCS11_OPERATION;
    if (t->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &t->admin) != CKR_OK)
        goto fail;
    t->admin_open = 1;
    if (t->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &t->crypto) != CKR_OK)
        goto fail;
    t->crypto_open = 1;
    rv = t->f->C_Login(t->admin, CKU_USER, (CK_UTF8CHAR_PTR)(uintptr_t)pin, (CK_ULONG)strlen(pin));
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        *err = pin_error(rv) ? -P3R_PKCS11_PIN : -P3R_PKCS11_OPERATION;
        goto fail;
    }
    *err = 0;
    return t;
fail:
    p3_p11_close(t);
    return NULL;
}

/* The SA key as a session object of the token: usable for one direction,
 * never readable again (CKA_SENSITIVE, CKA_EXTRACTABLE false). */
static int p3_p11_key_new(struct p3_p11 *t, const uint8_t *key, size_t len, int encrypt, unsigned long *handle)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_AES;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_OBJECT_HANDLE h;
    CK_ATTRIBUTE tmpl[] = {
        { CKA_CLASS, &cls, sizeof(cls) },
        { CKA_KEY_TYPE, &type, sizeof(type) },
        { CKA_TOKEN, &no, sizeof(no) },
        { CKA_PRIVATE, &yes, sizeof(yes) },
        { CKA_SENSITIVE, &yes, sizeof(yes) },
        { CKA_EXTRACTABLE, &no, sizeof(no) },
        { CKA_ENCRYPT, encrypt ? &yes : &no, sizeof(yes) },
        { CKA_DECRYPT, encrypt ? &no : &yes, sizeof(yes) },
        { CKA_VALUE, (void *)(uintptr_t)key, (CK_ULONG)len },
    };
    CK_RV rv;

    pthread_mutex_lock(&t->admin_lock);
    rv = t->f->C_CreateObject(t->admin, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), &h);
    pthread_mutex_unlock(&t->admin_lock);
    if (rv != CKR_OK)
        return -P3R_PKCS11_OPERATION;
    *handle = h;
    return 0;
}

static void p3_p11_key_free(struct p3_p11 *t, unsigned long handle)
{
    pthread_mutex_lock(&t->admin_lock);
    t->f->C_DestroyObject(t->admin, handle);
    pthread_mutex_unlock(&t->admin_lock);
}

/* Whether the key object's attributes say it cannot leave the token. */
static int p3_p11_key_sealed_in(struct p3_p11 *t, unsigned long handle)
{
    CK_BBOOL extractable = CK_TRUE, sensitive = CK_FALSE;
    CK_ATTRIBUTE q[] = {
        { CKA_EXTRACTABLE, &extractable, sizeof(extractable) },
        { CKA_SENSITIVE, &sensitive, sizeof(sensitive) },
    };
    uint8_t value[32];
    CK_ATTRIBUTE v = { CKA_VALUE, value, sizeof(value) };
    CK_RV rv, rv_value;

    pthread_mutex_lock(&t->admin_lock);
    rv = t->f->C_GetAttributeValue(t->admin, handle, q, 2);
    rv_value = t->f->C_GetAttributeValue(t->admin, handle, &v, 1);
    pthread_mutex_unlock(&t->admin_lock);
    OPENSSL_cleanse(value, sizeof(value));
    return rv == CKR_OK && extractable == CK_FALSE && sensitive == CK_TRUE &&
           rv_value == CKR_ATTRIBUTE_SENSITIVE;
}

/* One RFC 4106 op in the token, on the worker thread: the segments are
 * gathered (open: the tag appended, as C_Decrypt wants ciphertext ‖ tag),
 * the token called, the result scattered back. 0, -P3R_DP_AUTH_FAILED or -P3R_ACCEL_FAULT. tag_flip
 * is the injected corrupted-input fault (native/src/lookaside.c). */
static int p3_p11_gcm(struct p3_p11 *t, unsigned long handle, const uint8_t *iv, struct p3_crypto_op *op, int tag_flip)
{
    CK_GCM_PARAMS gcm;
    CK_MECHANISM mech = { CKM_AES_GCM, &gcm, sizeof(gcm) };
    CK_ULONG out_len = (CK_ULONG)t->room;
    size_t at = 0;
    CK_RV rv;

    if (op->stream_len + 16 > t->room)
        return -P3R_ACCEL_FAULT;
    for (unsigned i = 0; i < op->nseg; i++) {
        memcpy(t->in + at, op->seg[i].src, op->seg[i].len);
        at += op->seg[i].len;
    }
    memset(&gcm, 0, sizeof(gcm));
    gcm.pIv = (CK_BYTE_PTR)(uintptr_t)iv;
    gcm.ulIvLen = 12;
    gcm.ulIvBits = 96;
    gcm.pAAD = op->aad;
    gcm.ulAADLen = 16;
    gcm.ulTagBits = 128;
    if (op->op == P3_CRYPTO_SEAL) {
        rv = t->f->C_EncryptInit(t->crypto, &mech, handle);
        if (rv == CKR_OK)
            rv = t->f->C_Encrypt(t->crypto, t->in, (CK_ULONG)at, t->out, &out_len);
        if (rv != CKR_OK || out_len != at + 16)
            return -P3R_ACCEL_FAULT;
        memcpy(op->tag, t->out + at, 16);
    } else {
        memcpy(t->in + at, op->tag, 16);
        if (tag_flip)
            t->in[at + 5] ^= 0x10;      /* the simulator's corrupted-input fault */
        rv = t->f->C_DecryptInit(t->crypto, &mech, handle);
        if (rv != CKR_OK)
            return -P3R_ACCEL_FAULT;
        rv = t->f->C_Decrypt(t->crypto, t->in, (CK_ULONG)at + 16, t->out, &out_len);
        /* A bad tag is CKR_ENCRYPTED_DATA_INVALID in PKCS#11 v3.0 terms, but
         * SoftHSM2 2.6 says CKR_GENERAL_ERROR: any failed C_Decrypt is an
         * authentication failure here, and the dataplane confirms it on the
         * fallback before calling the packet forged (docs/engines.md). */
        if (rv != CKR_OK)
            return -P3R_DP_AUTH_FAILED;
        if (out_len != at)
            return -P3R_ACCEL_FAULT;
    }
    at = 0;
    for (unsigned i = 0; i < op->nseg; i++) {
        memcpy(op->seg[i].dst, t->out + at, op->seg[i].len);
        at += op->seg[i].len;
    }
    return 0;
}

#else /* built with P3HW_WITHOUT_PKCS11: the engine is compiled out, and says so (P3-E612) */

struct p3_p11 {
    int unused;
};

static struct p3_p11 *p3_p11_open(const char *module, const char *label, const char *pin, int *err)
{
    (void)module; (void)label; (void)pin;
    *err = -P3R_BACKEND_NOT_BUILT;
    return NULL;
}

static void p3_p11_close(struct p3_p11 *t) { (void)t; }

static int p3_p11_key_new(struct p3_p11 *t, const uint8_t *key, size_t len, int encrypt, unsigned long *handle)
{
    (void)t; (void)key; (void)len; (void)encrypt; (void)handle;
    return -P3R_BACKEND_NOT_BUILT;
}

static void p3_p11_key_free(struct p3_p11 *t, unsigned long handle) { (void)t; (void)handle; }

static int p3_p11_key_sealed_in(struct p3_p11 *t, unsigned long handle)
{
    (void)t; (void)handle;
    return 0;
}

static int p3_p11_gcm(struct p3_p11 *t, unsigned long handle, const uint8_t *iv, struct p3_crypto_op *op, int tag_flip)
{
    (void)t; (void)handle; (void)iv; (void)op; (void)tag_flip;
    return -P3R_ACCEL_FAULT;
}

#endif

/* ---- the engine: the token as the lookaside driver's core ---- */

/* A key object handle is never 0 (CK_INVALID_HANDLE), so it travels as the core's key pointer. */
static void *p11_key_new(void *core, uint32_t cipher, int encrypt, const uint8_t *key)
{
    unsigned long handle;
    if (p3_p11_key_new(core, key, cipher == P3DP_AES_256_GCM ? 32 : 16, encrypt, &handle))
        return NULL;
    return (void *)(uintptr_t)handle;   /* the key goes into the token and nowhere else on this side */
}

static void p11_key_free(void *core, void *key)
{
    p3_p11_key_free(core, (unsigned long)(uintptr_t)key);   /* destroyed in the token */
}

static int p11_gcm(void *core, void *key, const uint8_t *iv, struct p3_crypto_op *op, int tag_flip)
{
    return p3_p11_gcm(core, (unsigned long)(uintptr_t)key, iv, op, tag_flip);
}

static void p11_close(void *core)
{
    p3_p11_close(core);
}

static const struct p3_lookaside_core p11_core = {
    .key_new = p11_key_new,
    .key_free = p11_key_free,
    .gcm = p11_gcm,
    .close = p11_close,
};

/* 0, or -P3R_PKCS11_MODULE (module), -P3R_PKCS11_PIN (PIN), -P3R_PKCS11_TOKEN (token),
 * -P3R_PKCS11_OPERATION (operation) or -P3R_DP_BAD_CIPHER (not built in). */
static int pkcs11_start(const struct p3dp_engine_params *params, const struct p3_crypto_engine **engine,
                        void **state)
{
    struct p3_p11 *token;
    int err = -P3R_PKCS11_OPERATION;
    *engine = &p3_lookaside_driver;
    *state = NULL;
    if (!params)
        return -P3R_PKCS11_MODULE;
    token = p3_p11_open(params->module_path, params->token_label, params->pin, &err);
    if (!token)
        return err;
    *state = p3_lookaside_new(params, &p11_core, token);
    return *state ? 0 : -P3R_PKCS11_OPERATION;
}

static int pkcs11_key_sealed_in(void *engine, struct p3_crypto_sa *sa)
{
    void *key = p3_lookaside_key(sa);
    return engine && key && p3_p11_key_sealed_in(p3_lookaside_core_state(engine), (unsigned long)(uintptr_t)key);
}

const struct p3_engine_backend p3_pkcs11_backend = {
    .kind = P3DP_ENGINE_PKCS11,
    .start = pkcs11_start,
    .key_sealed_in = pkcs11_key_sealed_in,
};
