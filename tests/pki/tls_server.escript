#!/usr/bin/env escript
%% A TLS listener with RabbitMQ's AMQPS options, read from a rendered advanced.config
%% (rabbit.ssl_options). Prints "listening", then "accepted" or "refused <why>" per
%% handshake. Used by tests/pki/test_erlang_crl.py.
main([AdvancedConfig, Port]) ->
    {ok, [Config]} = file:consult(AdvancedConfig),
    Options = proplists:get_value(ssl_options, proplists:get_value(rabbit, Config)),
    [ok = application:ensure_started(App) || App <- [crypto, asn1, public_key]],
    ok = ssl:start(),
    {ok, Listen} = ssl:listen(list_to_integer(Port),
                              Options ++ [{reuseaddr, true}, {active, false}]),
    io:format("listening~n"),
    loop(Listen).

loop(Listen) ->
    {ok, Socket} = ssl:transport_accept(Listen),
    case ssl:handshake(Socket, 5000) of
        {ok, Tls} ->
            io:format("accepted~n"),
            ssl:send(Tls, <<"hello\n">>),
            ssl:close(Tls);
        {error, Why} ->
            io:format("refused ~0p~n", [Why])
    end,
    loop(Listen).
