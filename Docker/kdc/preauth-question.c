/*
 * A pre-authentication mechanism of the test realm's own (pa-type -150, private use) whose client half
 * asks the responder a question no MIT module asks, "x-test-question", with the challenge
 * {"hint":"the fish"}; the KDC half accepts the answer {"word":"swordfish"}. It exists so the tests can
 * prove that a question the library does not know reaches the caller raw and its raw answer reaches the KDC.
 *
 * One shared object holds both halves: clpreauth_question_initvt for clients (krb5.conf [plugins]) and
 * kdcpreauth_question_initvt for the KDC (kdc.conf [plugins]). Clients use it only when they ask for
 * pa-type -150 (krb5_get_init_creds_opt_set_preauth_list); the KDC offers and accepts it only for
 * principals with the string attribute "question" (kadmin setstr PRINCIPAL question yes).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <krb5/clpreauth_plugin.h>
#include <krb5/kdcpreauth_plugin.h>

#define PA_QUESTION (-150)
#define QUESTION "x-test-question"
#define CHALLENGE "{\"hint\":\"the fish\"}"
#define ANSWER "{\"word\":\"swordfish\"}"

static krb5_preauthtype pa_types[] = { PA_QUESTION, 0 };

/* Client */

static int
cl_flags(krb5_context context, krb5_preauthtype pa_type)
{
    return PA_REAL;
}

static krb5_error_code
cl_prep_questions(krb5_context context, krb5_clpreauth_moddata moddata, krb5_clpreauth_modreq modreq,
                  krb5_get_init_creds_opt *opt, krb5_clpreauth_callbacks cb, krb5_clpreauth_rock rock,
                  krb5_kdc_req *request, krb5_data *body, krb5_data *previous, krb5_pa_data *pa_data)
{
    return cb->ask_responder_question(context, rock, QUESTION, CHALLENGE);
}

static krb5_error_code
cl_process(krb5_context context, krb5_clpreauth_moddata moddata, krb5_clpreauth_modreq modreq,
           krb5_get_init_creds_opt *opt, krb5_clpreauth_callbacks cb, krb5_clpreauth_rock rock,
           krb5_kdc_req *request, krb5_data *body, krb5_data *previous, krb5_pa_data *pa_data,
           krb5_prompter_fct prompter, void *prompter_data, krb5_pa_data ***pa_data_out)
{
    const char *answer = cb->get_responder_answer(context, rock, QUESTION);
    krb5_pa_data **list;

    if (answer == NULL)
        return KRB5_PREAUTH_FAILED;
    list = calloc(2, sizeof(*list));
    if (list == NULL)
        return ENOMEM;
    list[0] = calloc(1, sizeof(**list));
    if (list[0] == NULL || (list[0]->contents = (krb5_octet *)strdup(answer)) == NULL) {
        free(list[0]);
        free(list);
        return ENOMEM;
    }
    list[0]->magic = KV5M_PA_DATA;
    list[0]->pa_type = PA_QUESTION;
    list[0]->length = strlen(answer);
    *pa_data_out = list;
    return 0;
}

krb5_error_code
clpreauth_question_initvt(krb5_context context, int maj_ver, int min_ver, krb5_plugin_vtable vtable);

krb5_error_code
clpreauth_question_initvt(krb5_context context, int maj_ver, int min_ver, krb5_plugin_vtable vtable)
{
    krb5_clpreauth_vtable vt;

    if (maj_ver != 1)
        return KRB5_PLUGIN_VER_NOTSUPP;
    vt = (krb5_clpreauth_vtable)vtable;
    vt->name = "question";
    vt->pa_type_list = pa_types;
    vt->flags = cl_flags;
    vt->process = cl_process;
    vt->prep_questions = cl_prep_questions;
    return 0;
}

/* KDC */

static int
kdc_flags(krb5_context context, krb5_preauthtype pa_type)
{
    return PA_SUFFICIENT;
}

/* Whether the client principal has the "question" string attribute. */
static int
enabled(krb5_context context, krb5_kdcpreauth_callbacks cb, krb5_kdcpreauth_rock rock)
{
    char *value = NULL;
    int on;

    if (cb->get_string(context, rock, "question", &value) != 0)
        return 0;
    on = value != NULL;
    cb->free_string(context, rock, value);
    return on;
}

static void
kdc_edata(krb5_context context, krb5_kdc_req *request, krb5_kdcpreauth_callbacks cb,
          krb5_kdcpreauth_rock rock, krb5_kdcpreauth_moddata moddata, krb5_preauthtype pa_type,
          krb5_kdcpreauth_edata_respond_fn respond, void *arg)
{
    (*respond)(arg, enabled(context, cb, rock) ? 0 : ENOENT, NULL);
}

static void
kdc_verify(krb5_context context, krb5_data *req_pkt, krb5_kdc_req *request, krb5_enc_tkt_part *enc_tkt_reply,
           krb5_pa_data *data, krb5_kdcpreauth_callbacks cb, krb5_kdcpreauth_rock rock,
           krb5_kdcpreauth_moddata moddata, krb5_kdcpreauth_verify_respond_fn respond, void *arg)
{
    if (enabled(context, cb, rock) && data->length == strlen(ANSWER) && memcmp(data->contents, ANSWER, data->length) == 0) {
        enc_tkt_reply->flags |= TKT_FLG_PRE_AUTH;
        (*respond)(arg, 0, NULL, NULL, NULL);
    } else {
        (*respond)(arg, KRB5KDC_ERR_PREAUTH_FAILED, NULL, NULL, NULL);
    }
}

krb5_error_code
kdcpreauth_question_initvt(krb5_context context, int maj_ver, int min_ver, krb5_plugin_vtable vtable);

krb5_error_code
kdcpreauth_question_initvt(krb5_context context, int maj_ver, int min_ver, krb5_plugin_vtable vtable)
{
    krb5_kdcpreauth_vtable vt;

    if (maj_ver != 1)
        return KRB5_PLUGIN_VER_NOTSUPP;
    vt = (krb5_kdcpreauth_vtable)vtable;
    vt->name = "question";
    vt->pa_type_list = pa_types;
    vt->flags = kdc_flags;
    vt->edata = kdc_edata;
    vt->verify = kdc_verify;
    return 0;
}
