/** @odoo-module **/
// Tours of the MTS Connector screens in the real web client (run by tests/test_tours.py
// against the real connector service and the real MTS).

import { registry } from "@web/core/registry";
import { jsonrpc } from "@web/core/network/rpc_service";

const tours = registry.category("web_tour.tours");
const CONNECTORS = "/web#action=mts_connector.action_mts_connector";
// The current job status: a highlighted arrow, or the dropdown toggle on a narrow screen.
function status(label) {
    return [".o_arrow_button_current", ".dropdown-toggle"]
        .map((current) => `.o_statusbar_status ${current}:contains('${label}')`)
        .join(", ");
}

function wait(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
}

tours.add("mts_connector_form_tour", {
    test: true,
    url: CONNECTORS,
    steps: () => [
        { content: "New connector", trigger: ".o_list_button_add" },
        { content: "Name", trigger: ".o_field_widget[name=name] input", run: "text Tour connector" },
        { content: "ODK input", trigger: ".o_field_widget[name=input_type] select", run: 'text "odk"' },
        { content: "Recurring", trigger: ".o_field_widget[name=is_recurring] select", run: 'text "recurring"' },
        { content: "Every hour", trigger: ".o_field_widget[name=interval_minutes] input", run: "text 60" },
        {
            content: "The mapping is a labelled code editor",
            trigger: ".o_form_label:contains('Mapping (JSON)')",
            extra_trigger: ".o_field_widget[name=mapping] .ace_editor",
            run() {},
        },
        { content: "ODK password", trigger: ".o_field_widget[name=odk_password] input", run: "text odk-tour-pw" },
        { content: "Save", trigger: ".o_form_button_save" },
        { content: "Saved", trigger: ".o_breadcrumb .active:contains('Tour connector')", run() {} },
        { content: "Start", trigger: "button[name=action_start]" },
        {
            content: "Running (job status from the service)",
            trigger: status("Running"),
            run() {},
        },
        {
            content: "Wait for the service's scheduler to queue the first run, then reload the form",
            trigger: "button[name=action_stop]",
            async run() {
                for (let i = 0; i < 60; i++) {
                    const [rec] = await jsonrpc("/web/dataset/call_kw/mts.connector/search_read", {
                        model: "mts.connector",
                        method: "search_read",
                        args: [[["name", "=", "Tour connector"]], ["run_ids"]],
                        kwargs: {},
                    });
                    if (rec && rec.run_ids.length) {
                        break;
                    }
                    await wait(500);
                }
                window.location.reload();
            },
        },
        { content: "The Runs tab", trigger: ".o_notebook_headers a:contains('Runs')" },
        {
            content: "A run appears in the Runs tab",
            trigger: ".o_field_widget[name=run_ids] .o_data_row",
            run() {},
        },
        {
            content: "Run now is hidden while that run is open",
            trigger: ".o_form_statusbar:not(:has(button[name=action_run_now]))",
            run() {},
        },
        { content: "Stop", trigger: "button[name=action_stop]" },
        {
            content: "Completed",
            trigger: status("Completed"),
            run() {},
        },
    ],
});

tours.add("mts_connector_settings_tour", {
    test: true,
    url: "/web#action=mts_connector.action_mts_connector_settings",
    steps: () => [
        {
            content: "One MTS Connector settings app",
            trigger: ".app_settings_block[data-key=mts_connector]",
            run() {
                if (document.querySelectorAll(".app_settings_block[data-key=g2p_mts_config_settings]").length) {
                    throw new Error("g2p_mts's own MTS settings are shown next to ours");
                }
            },
        },
        { content: "Test the connection", trigger: "button[name=action_mts_connector_check_service]" },
        {
            content: "The service answered and accepted the login",
            trigger: ".o_notification:contains('login accepted')",
            run() {},
        },
    ],
});

tours.add("mts_connector_service_down_tour", {
    test: true,
    url: CONNECTORS,
    steps: () => [
        { content: "The list opens with the service down", trigger: ".o_data_row:contains('Down connector') td[name=name]" },
        {
            content: "The form says why the state is missing",
            trigger: ".alert-warning:contains('unreachable')",
            run() {},
        },
        { content: "Rename", trigger: ".o_field_widget[name=name] input", run: "text Down connector renamed" },
        { content: "Save", trigger: ".o_form_button_save" },
        {
            content: "A warning dialog, not an Odoo Server Error with a traceback",
            trigger:
                ".modal-content.o_error_dialog:contains('unreachable'):contains('Odoo Warning')" +
                ":not(:contains('Server Error')):not(:contains('See details'))",
            run() {},
        },
        { content: "Close the dialog", trigger: ".modal-content .o-default-button" },
        { content: "Discard the change", trigger: ".o_form_button_cancel" },
        { content: "Back to the saved name", trigger: ".o_field_widget[name=name] input", run() {} },
    ],
});
