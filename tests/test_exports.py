"""
The public surface of C{phantom_frame}.
"""

from twisted.trial.unittest import SynchronousTestCase

import phantom_frame


class ExportTests(SynchronousTestCase):
    """
    C{phantom_frame} exports the library API and nothing else.
    """

    def test_all(self) -> None:
        """
        C{__all__} lists exactly the public names, and each exists.
        """
        self.assertEqual(
            sorted(phantom_frame.__all__),
            sorted(
                [
                    "__version__",
                    "CacheHandle",
                    "CachePolicy",
                    "CacheStorageMode",
                    "CacheStrategy",
                    "CompressStrategy",
                    "CreateProxyConfig",
                    "ProxyMode",
                    "RequestInfo",
                    "Webhook",
                    "WebhookType",
                    "create_proxy",
                ]
            ),
        )
        for name in phantom_frame.__all__:
            self.assertTrue(hasattr(phantom_frame, name), name)

    def test_builders(self) -> None:
        """
        L{phantom_frame.CreateProxyConfig} has the original's builder
        methods, each returning a new config.
        """
        config = phantom_frame.CreateProxyConfig("http://origin:8080")
        built = (
            config.with_include_paths(["/a/*"])
            .with_exclude_paths(["/a/b"])
            .with_websocket_enabled(False)
            .with_forward_get_only(True)
            .with_cache_key_fn(lambda info: info.path)
            .with_cache_404_capacity(5)
            .with_use_404_meta(True)
            .caching_strategy("only_html")
            .compression_strategy("gzip")
            .with_compress_on_fill(True)
            .with_cache_storage_mode("filesystem")
            .with_cache_directory("/tmp/x")
            .with_proxy_mode("pre_generate")
        )
        self.assertEqual(config, phantom_frame.CreateProxyConfig("http://origin:8080"))
        self.assertEqual(built.include_paths, ("/a/*",))
        self.assertEqual(built.cache_strategy, phantom_frame.CacheStrategy.ONLY_HTML)
        self.assertEqual(built.compress_strategy, phantom_frame.CompressStrategy.GZIP)
        self.assertTrue(built.compress_on_fill)
        self.assertFalse(config.compress_on_fill)
        self.assertEqual(built.proxy_mode, phantom_frame.ProxyMode.PRE_GENERATE)
        self.assertEqual(built.cache_storage_mode, phantom_frame.CacheStorageMode.FILESYSTEM)
        self.assertFalse(built.enable_websocket)
        self.assertRaises(ValueError, config.with_cache_strategy, "sometimes")
