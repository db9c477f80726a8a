//! The conformance suite through `switchboard::connect("echo://…")`: the
//! driver is registered the way a program would, then every case connects
//! through the facade's registry.

switchboard_conformance::suite!(
    broker: "echo",
    url_env: "SWITCHBOARD_ECHO_URL",
    default_url: "echo://",
    connect: |url: String| async move {
        switchboard::register(switchboard_echo::DRIVER)?;
        switchboard::connect(&url).await
    },
);
