"""The corpus table: what a catch-all handler must see for every corpus body.

``tests/corpus/`` is a copy of the shared corpus (its ``SOURCES.md`` says where
each body came from). The table holds what a catch-all handler must see per
file: event names, their count, and per event the time and the accessors;
``FRAGMENT__*`` pieces of deliveries get their clean 4xx instead.
"""

# ruff: noqa: E501  (the table keeps one event per line; ids and texts are long)

from __future__ import annotations

from typing import NamedTuple

from tests.conftest import HERE

CORPUS = HERE / "corpus"


class E(NamedTuple):
    """One routed event as a handler reads it (time in UTC, without the offset)."""

    name: str
    time: str | None
    kind: str | None
    sender_id: str | None
    recipient_id: str | None
    message_id: str | None
    text: str | None


# fmt: off
EXPECTED: dict[str, list[E] | tuple[int, str]] = {
    "FRAGMENT__maksar_ldapbot__entry_is_a_number.json": (422, "bad_entry"),
    "FRAGMENT__maksar_ldapbot__object_without_entry.json": (422, "not_an_envelope"),
    "FRAGMENT__nimiq_tip__page_feed_bare_change.json": (422, "not_an_envelope"),
    "FRAGMENT__nimiq_tip__page_mention_bare_change.json": (422, "not_an_envelope"),
    "FRAGMENT__tock__messaging_item_app_roles_no_sender.json": (422, "not_an_envelope"),
    "FRAGMENT__tock__messaging_item_pass_thread_control.json": (422, "not_an_envelope"),
    "FRAGMENT__tock__messaging_item_quick_reply.json": (422, "not_an_envelope"),
    "FRAGMENT__tock__messaging_item_referral.json": (422, "not_an_envelope"),
    "azure_sentinel__workplace_security_integrations_custom_integration_edit.json": [
        E("workplace_security.integrations", "2021-03-29T12:00:20", None, None, None, None, None),
    ],
    "bluetel_chatops__group_posts_link_add.json": [
        E("group.posts", "2018-08-04T22:58:29", None, "222224088109067", None, "222224088109067_100024088109067", "This is a test event..!\n\n"),
    ],
    "botman_facebook__delivery_without_timestamp.json": [
        E("page.message_deliveries", "2016-11-27T20:44:47.271", "delivery", "USER_ID", "PAGE_ID", None, None),
    ],
    "botman_facebook__message_echo.json": [
        E("page.message_echoes", "2016-11-27T20:44:47.147", "message", "1433960459967306", "111899832631525", "mid.1480279487147:4388d3b344", "Hi"),
    ],
    "botman_facebook__message_with_nlp_entities.json": [
        E("page.messages", "2017-09-19T19:59:55.620", "message", "1433960459967306", "111899832631525", "mid.$cAABlxfDuVgpkzP8I5Fem7nAgTm_7", "bye, see you tomorrow at 4pm"),
    ],
    "botman_facebook__messaging_item_empty_object.json": [
        E("page.messaging", "2016-11-27T20:44:47.271", None, None, None, None, None),
    ],
    "botman_facebook__optin_user_ref_without_sender.json": [
        E("page.messaging_optins", "2016-11-27T20:44:47.147", "optin", None, "111899832631525", None, None),
    ],
    "botman_facebook__read.json": [
        E("page.message_reads", "2016-03-22T17:47:36.463", "read", "USER_ID", "PAGE_ID", None, None),
    ],
    "botman_facebook__referral_placeholders.json": [
        E("page.messaging_referrals", "2016-11-27T20:44:47.147", "referral", "1433960459967306", "111899832631525", None, None),
    ],
    "botman_facebook__unknown_messaging_key_foo.json": [
        E("page.foo", "2016-03-22T17:47:36.463", "foo", "USER_ID", "PAGE_ID", None, None),
    ],
    "fbmessenger__account_linking_integer_ids.json": [
        E("page.messaging_account_linking", "2016-03-12T06:29:57.627", "account_linking", "1234", "1234", None, None),
    ],
    "fbmessenger__message_integer_ids.json": [
        E("page.messages", "2016-03-12T06:29:57.627", "message", "1234", "1234", "mid.1457764197618:41d102a3e1ae206a38", "hello, world!"),
    ],
    "fbmq__account_linking.json": [
        E("page.messaging_account_linking", "2016-08-24T08:49:02.079", "account_linking", "1134343043305865", "1691462197845448", None, None),
    ],
    "fbmq__app_roles.json": [
        E("page.messaging_handovers", "2016-03-23T00:25:52.478", "app_roles", None, "<PSID>", None, None),
    ],
    "fbmq__checkout_update.json": [
        E("page.messaging_checkout_updates", "2016-09-06T23:33:07.206", "checkout_update", "<PSID>", "<PAGE_ID>", None, None),
    ],
    "fbmq__game_play.json": [
        E("page.messaging_game_plays", "2016-07-21T14:30:00", "game_play", "<PSID>", "<PAGE_ID>", None, None),
    ],
    "fbmq__message_deliveries.json": [
        E("page.message_deliveries", "2016-08-24T08:46:36.029", "delivery", "1134343043305865", "1691462197845448", None, None),
    ],
    "fbmq__message_echoes.json": [
        E("page.message_echoes", "2016-08-24T08:21:08.763", "message", "1691462197845448", "1134343043305865", "mid.1472026868734:832ecbdfc1ffc30139", "hello"),
    ],
    "fbmq__message_reads.json": [
        E("page.message_reads", "2016-08-24T08:21:09.186", "read", "1134343043305865", "1691462197845448", None, None),
    ],
    "fbmq__messages_text.json": [
        E("page.messages", "2016-08-24T08:21:07.080", "message", "1134343043305865", "1691462197845448", "mid.1472026867074:cfb5e1d4bde07a2a55", "hello world"),
    ],
    "fbmq__object_not_a_page.json": [
        E("not_a_page.messages", "2016-08-24T08:21:07.080", "message", "1134343043305865", "1691462197845448", "mid.1472026867074:cfb5e1d4bde07a2a55", "hello world"),
    ],
    "fbmq__pass_thread_control.json": [
        E("page.messaging_handovers", "2016-03-23T00:25:52.478", "pass_thread_control", "<PSID>", "<PAGE_ID>", None, None),
    ],
    "fbmq__payment.json": [
        E("page.messaging_payments", "2016-09-07T00:39:52.799", "payment", "USER_ID", "PAGE_ID", None, None),
    ],
    "fbmq__policy_enforcement_hyphenated_key.json": [
        E("page.messaging_policy_enforcement", "2016-03-23T00:25:52.478", "policy-enforcement", None, "PAGE_ID", None, None),
    ],
    "fbmq__postback.json": [
        E("page.messaging_postbacks", "2016-08-24T08:40:06.107", "postback", "1134343043305865", "1691462197845448", None, None),
    ],
    "fbmq__postback_with_referral.json": [
        E("page.messaging_postbacks", "2016-08-24T08:40:06.107", "postback", "1134343043305865", "1691462197845448", None, None),
    ],
    "fbmq__quick_reply.json": [
        E("page.messages", "2016-08-24T08:50:37.825", "message", "1134343043305865", "1691462197845448", "mid.1472028637817:ae2763cc036a664b43", "Action"),
    ],
    "fbmq__referral.json": [
        E("page.messaging_referrals", "2016-08-24T08:49:02.079", "referral", "1134343043305865", "1691462197845448", None, None),
    ],
    "fbmq__request_thread_control.json": [
        E("page.messaging_handovers", "2016-03-23T00:25:52.478", "request_thread_control", "<USER_ID>", "<PSID>", None, None),
    ],
    "fbmq__standby_postback_sender_id_with_letter.json": [
        E("page.standby", "2017-08-17T19:13:55.746", "postback", "143792855957756q9", "214236215771147", None, None),
    ],
    "fbmq__take_thread_control.json": [
        E("page.messaging_handovers", "2016-03-23T00:25:52.478", "take_thread_control", "<USER_ID>", "<PSID>", None, None),
    ],
    "fbmq__unknown_messaging_key.json": [
        E("page.unknown", "2016-08-24T08:21:07.080", "unknown", "1134343043305865", "1691462197845448", "mid.1472026867074:cfb5e1d4bde07a2a55", None),
    ],
    "kiritharan_wpcallback__group_comments_add.json": [
        E("group.comments", "2018-01-16T03:03:13", None, "100016022019645", None, "545236832510708", "this is comment"),
    ],
    "kiritharan_wpcallback__group_posts_file_upload_attachments.json": [
        E("group.posts", "2018-01-16T03:07:45", None, "100016022019645", None, "483499012017824_545237825843942", None),
    ],
    "kiritharan_wpcallback__group_posts_status_add.json": [
        E("group.posts", "2018-01-16T02:59:58", None, "100016022019645", None, "483499012017824_545236315844093", "iyiiyuiuiu"),
    ],
    "kiritharan_wpcallback__user_message_sends_chat.json": [
        E("user.message_sends", "2018-01-16T03:05:39", None, "100016022019645", None, "m_mid.$cAAAAAAxbb-dnLjM2Mlg_O1EUcVB7", "fdfdsffs"),
    ],
    "maksar_ldapbot__page_message_and_postback_one_entry.json": [
        E("page.messages", "1970-01-01T00:00:01", "message", "sender_id", "id", "mid", "text"),
        E("page.messaging_postbacks", "1970-01-01T00:00:01", "postback", "sender_id", "id", None, None),
    ],
    "maksar_ldapbot__page_messages_workplace_bot.json": [
        E("page.messages", "1970-01-01T00:02:03", "message", "sender_id", "recipient_id", "mid", "text"),
    ],
    "maksar_ldapbot__page_postback_workplace_bot.json": [
        E("page.messaging_postbacks", "1970-01-01T00:02:03", "postback", "sender_id", "recipient_id", None, None),
    ],
    "meta_docs__instagram_messages_share_attachment_ig_post.json": [
        E("instagram.messages", "2025-10-24T06:28:14.014", "message", "{SENDER_ID}", "{PAGE_ID}", "{MESSAGE_ID}", None),
    ],
    "nimiq_tip__page_feed_dashboard_test.json": [
        E("page.feed", "2018-11-30T20:14:02", "status", "1067280970047460", None, "44444444_444444444", "Example post content."),
    ],
    "nimiq_tip__page_mention_dashboard_test.json": [
        E("page.mention", "2018-11-30T20:14:40", "post", "44444444", None, "44444444_444444444", None),
    ],
    "page_interaction_mgr__page_feed_comment_add_on_video.json": [
        E("page.feed", "2020-12-26T03:15:28", "comment", "3450429531722233", None, "407298303721936_408074786977621", "❤️"),
    ],
    "page_interaction_mgr__page_feed_reaction_add.json": [
        E("page.feed", "2021-02-28T08:45:27", "reaction", "1056913944332", None, "106403761078808_292875975764918", None),
    ],
    "page_interaction_mgr__page_feed_reaction_edit.json": [
        E("page.feed", "2020-12-26T03:14:00", "reaction", "3450429531722233", None, "105691394435112_407298303721936", None),
    ],
    "page_interaction_mgr__page_messages_text.json": [
        E("page.messages", "2021-01-03T06:41:58.099", "message", "3723777387644704", "105691394435112", "m_ABt4i4wZIOP21KTsxMwTaHlgf8qsN5F1_pYhFwXvsac2EfSPOAzvt8s8WqxZHjsJUT4OHm8W49PFJtBJ3ITjIg", "I want to learn more about Christ"),
    ],
    "pywa__account_update_account_violation.json": [
        E("whatsapp_business_account.account_update", "2025-03-31T20:11:43", None, None, None, None, None),
    ],
    "pywa__account_update_partner_added.json": [
        E("whatsapp_business_account.account_update", "2025-04-16T17:18:52", None, None, None, None, None),
    ],
    "pywa__call_connect_user_initiated.json": [
        E("whatsapp_business_account.calls", "2025-07-15T12:38:27", "call", "972987654321", "743897493242", None, None),
    ],
    "pywa__call_permission_update_accept.json": [
        E("whatsapp_business_account.messages", "2025-07-15T12:23:02", "message", "972987654321", "1122334455667", "wamid.x", None),
    ],
    "pywa__call_status.json": [
        E("whatsapp_business_account.calls", "2022-12-21T17:47:04", "status", None, "5483758353", None, None),
    ],
    "pywa__call_terminate.json": [
        E("whatsapp_business_account.calls", "2022-12-21T17:47:04", "call", "16315553602", "37489742", None, None),
    ],
    "pywa__callback_button_button.json": [
        E("whatsapp_business_account.messages", "2023-10-25T20:45:30", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__callback_button_quick_reply.json": [
        E("whatsapp_business_account.messages", "2023-10-25T21:23:47", "message", "972987654321", "1122334455667", "wamid.xsidjw", None),
    ],
    "pywa__callback_selection_callback.json": [
        E("whatsapp_business_account.messages", "2023-10-25T20:48:25", "message", "972987654321", "1122334455667", "wamid.zyzxyz", None),
    ],
    "pywa__deleted_message_revoke.json": [
        E("whatsapp_business_account.messages", "2023-10-11T16:53:43", "message", "<WHATSAPP_USER_PHONE_NUMBER>", "<BUSINESS_PHONE_NUMBER_ID>", "<WHATSAPP_MESSAGE_ID>", None),
    ],
    "pywa__edited_message_image.json": [
        E("whatsapp_business_account.messages", "2025-06-13T22:42:55", "message", "16505551234", "106540352242922", "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=", None),
    ],
    "pywa__flow_completion_completion.json": [
        E("whatsapp_business_account.messages", "2023-12-13T21:21:13", "message", "972987654321", "1122334455667", "wamid.wegrchytvwcggt==", None),
    ],
    "pywa__message_audio.json": [
        E("whatsapp_business_account.messages", "2023-10-11T16:58:29", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_chosen_location.json": [
        E("whatsapp_business_account.messages", "2023-10-11T17:15:57", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_contacts.json": [
        E("whatsapp_business_account.messages", "2023-10-11T17:17:01", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_current_location.json": [
        E("whatsapp_business_account.messages", "2023-10-11T17:15:57", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_document.json": [
        E("whatsapp_business_account.messages", "2023-10-11T17:01:06", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_forwarded.json": [
        E("whatsapp_business_account.messages", "2023-10-11T17:20:15", "message", "972987654321", "1122334455667", "wamid.xyzxyz", "forwarded text"),
    ],
    "pywa__message_image.json": [
        E("whatsapp_business_account.messages", "2023-10-11T16:56:19", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_interactive_message_with_err.json": [
        E("whatsapp_business_account.messages", "2023-11-20T18:38:14", "message", "972987654321", "1122334455667", "wamid.wegrchytvwcggt=", None),
    ],
    "pywa__message_media_with_url.json": [
        E("whatsapp_business_account.messages", "2023-10-11T16:56:19", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_order.json": [
        E("whatsapp_business_account.messages", "2023-10-11T17:17:48", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_reaction.json": [
        E("whatsapp_business_account.messages", "2023-10-11T17:14:16", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_referral.json": [
        E("whatsapp_business_account.messages", "2023-10-11T17:23:20", "message", "972987654321", "1122334455667", "wamid.ID", "BODY"),
    ],
    "pywa__message_reply.json": [
        E("whatsapp_business_account.messages", "2023-10-11T17:19:06", "message", "972987654321", "1122334455667", "wamid.xyzxyz", "replied text"),
    ],
    "pywa__message_static_sticker.json": [
        E("whatsapp_business_account.messages", "2023-10-11T17:02:40", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_status_delivered.json": [
        E("whatsapp_business_account.messages", "2023-10-25T20:49:05", "status", None, "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_status_failed.json": [
        E("whatsapp_business_account.messages", "2023-07-15T00:20:58", "status", None, "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_status_group.json": [
        E("whatsapp_business_account.messages", "2023-10-25T20:49:05", "status", None, "<BUSINESS_PHONE_NUMBER_ID>", "<WHATSAPP_MESSAGE_ID>", None),
    ],
    "pywa__message_status_played.json": [
        E("whatsapp_business_account.messages", "2023-07-15T00:20:58", "status", None, "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_status_read.json": [
        E("whatsapp_business_account.messages", "2023-07-15T00:20:58", "status", None, "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_status_sent.json": [
        E("whatsapp_business_account.messages", "2023-10-25T20:49:05", "status", None, "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_status_with_tracker.json": [
        E("whatsapp_business_account.messages", "2023-10-25T20:49:05", "status", None, "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_text.json": [
        E("whatsapp_business_account.messages", "2023-10-11T16:53:43", "message", "972987654321", "1122334455667", "wamid.xyzxyz", "Body Text"),
    ],
    "pywa__message_unreaction_empty.json": [
        E("whatsapp_business_account.messages", "2023-10-11T17:14:16", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_unsupported.json": [
        E("whatsapp_business_account.messages", "2023-10-11T17:18:26", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_video.json": [
        E("whatsapp_business_account.messages", "2023-10-11T17:12:42", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__message_voice.json": [
        E("whatsapp_business_account.messages", "2023-10-11T16:57:53", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__outgoing_message_text.json": [
        E("whatsapp_business_account.smb_message_echoes", "2023-10-11T16:53:43", "message_echo", "<BUSINESS_DISPLAY_PHONE_NUMBER>", "1122334455667", "<WHATSAPP_MESSAGE_ID>", "Test message"),
    ],
    "pywa__system_identity_change.json": [
        E("whatsapp_business_account.messages", "2023-10-11T17:18:26", "message", "972987654321", "1122334455667", "wamid.xyzxyz", None),
    ],
    "pywa__system_phone_number_change.json": [
        E("whatsapp_business_account.messages", "2025-07-30T04:55:15", "message", "972987654321", "1122334455667", "wamid.xyzxyz==", None),
    ],
    "pywa__template_category_update_marketing.json": [
        E("whatsapp_business_account.template_category_update", "2025-06-19T14:54:42", None, None, None, None, None),
    ],
    "pywa__template_quality_update_yellow.json": [
        E("whatsapp_business_account.message_template_quality_update", "2023-01-28T00:04:50", None, None, None, None, None),
    ],
    "pywa__template_status_update_approved.json": [
        E("whatsapp_business_account.message_template_status_update", "2025-06-30T01:39:08", None, None, None, None, None),
    ],
    "pywa__user_marketing_preferences_resume.json": [
        E("whatsapp_business_account.user_preferences", "2024-11-15T21:22:01", "user_preference", None, "106540352242922", None, None),
    ],
    "social_selling__instagram_comments_doc_example.json": [
        E("instagram.comments", "2023-01-13T16:48:12", None, "17841405822211844", None, "18034510236789012", "This is amazing!"),
    ],
    "social_selling__instagram_mentions_doc_example.json": [
        E("instagram.mentions", "2023-01-13T16:48:12", None, "17841405822211844", None, "18034510236789012", None),
    ],
    "social_selling__instagram_messages_text_captured.json": [
        E("instagram.messages", "2025-11-01T18:05:15.339", "message", "1129842642640637", "17841400538867190", "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwNTM4ODY3MTkwOjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI1ODU5OTE3NTI2OTQwODg3NjozMjUwMzUzNzgwOTczNzAyNzc4NDE5MDU4NzUxMTUwNDg5NgZDZD", "Oi"),
    ],
    "social_selling__instagram_messages_text_fixture.json": [
        E("instagram.messages", "2025-10-31T19:28:23.034", "message", "1378516947077414", "17841403506636395", "msg_001", "Oi! Gostaria de saber mais sobre os produtos"),
    ],
    "social_selling__instagram_messaging_seen_read_captured.json": [
        E("instagram.messaging_seen", "2025-11-01T15:25:59.340", "read", "1092310252982105", "17841403506636395", "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAzNTA2NjM2Mzk1OjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI1ODU5OTE3NTI2OTQwODg3NjozMjUwMzM2MTczNzg4MTI5NDExMzU3NjQ4OTczNTY4NDA5NgZDZD", None),
    ],
    "social_selling__instagram_messaging_seen_read_captured_2nd_delivery.json": [
        E("instagram.messaging_seen", "2025-11-01T15:25:59.340", "read", "1092310252982105", "17841403506636395", "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAzNTA2NjM2Mzk1OjM0MDI4MjM2Njg0MTcxMDMwMTI0NDI1ODU5OTE3NTI2OTQwODg3NjozMjUwMzM2MTczNzg4MTI5NDExMzU3NjQ4OTczNTY4NDA5NgZDZD", None),
    ],
    "tock__messages_text_with_nlp_detected_locales.json": [
        E("page.messages", "2019-11-21T12:00:24.727", "message", "1696785613739982", "1072877829517101", "m_bWelEDyH_VUB2asdGYWNskansOeR_J9rheTeWjyz7SOKVtTieg4N7cKiLIioB-p1jMGHO81pvH3M7g5zBOzppQ", "Bonjour"),
    ],
    "tock__standby_postback_empty_object.json": [
        E("page.standby", "2019-11-19T14:54:45.472", "postback", "1590192107678927", "1744550565845823", None, None),
    ],
    "uniericuni_blueprint__postback_referral_no_entry_id.json": [
        E("page.messaging_postbacks", None, "postback", "2014321581917874", "173511476584074", None, None),
    ],
    "uniericuni_blueprint__sticker_no_entry_id_time_or_timestamp.json": [
        E("page.messages", None, "message", "1606015496154680", "430311617404468", "mid.$cAADHPVJEDStnxdJQ-VhlI0IqAqYu", None),
    ],

}
# fmt: on


def test_every_corpus_file_is_in_the_table() -> None:
    assert {p.name for p in CORPUS.glob("*.json")} == set(EXPECTED)
    assert len(EXPECTED) == 109


def test_corpus_source_list_is_kept() -> None:
    sources = (CORPUS / "SOURCES.md").read_text()
    missing = [name for name in EXPECTED if f"| {name} |" not in sources]
    assert missing == []
